from smsrouter.cli import main

raise SystemExit(main())
