"""The compliance rules of CONTRACT §6 active on the benchmark (issue 18's
budget: "opt-outs (100,000 numbers loaded), 20 content rules, sender rules
for 50 countries and a template-required account in the mix"), none of
them refusing the benchmark's traffic: its senders are short codes and its
recipients +1 numbers that no opt-out lists and no pattern matches.
"""

from __future__ import annotations

import aiohttp

from bench.procs import LOOPBACK

ADMIN_TOKEN = "bench-admin-token-0123456789"
# Opted-out subscribers of the benchmark's account: New York numbers, none
# of which the benchmark sends to (its recipients are +14155...).
OPT_OUTS = 100_000

# Twenty patterns of the kinds aggregators run: link shorteners, lending,
# gambling, cannabis, phishing wording, crypto, adult content.
CONTENT_PATTERNS = (
    ("url shortener", r"(?i)\b(bit\.ly|tinyurl\.com|goo\.gl|t\.co|ow\.ly)/", "block"),
    ("payday loan", r"(?i)\bpayday\s+loans?\b", "block"),
    ("loan approval", r"(?i)\b(guaranteed|instant)\s+(loan|approval)\b", "block"),
    ("casino", r"(?i)\b(casino|jackpot|free\s+spins)\b", "block"),
    ("betting", r"(?i)\b(sportsbook|bet\s+now|odds\s+boost)\b", "flag"),
    ("cannabis", r"(?i)\b(cbd|thc|cannabis|marijuana)\b", "block"),
    ("crypto", r"(?i)\b(bitcoin|crypto\s*currency|airdrop)\b", "flag"),
    ("account suspended", r"(?i)your\s+account\s+(has\s+been\s+)?suspended", "block"),
    ("verify now", r"(?i)\bverify\s+(your\s+)?(identity|account)\s+now\b", "block"),
    ("gift card", r"(?i)\bgift\s*cards?\b.*\b(win|won|claim)\b", "block"),
    ("prize", r"(?i)\byou\s+(have\s+)?won\b", "block"),
    ("debt relief", r"(?i)\bdebt\s+(relief|consolidation)\b", "flag"),
    ("work from home", r"(?i)\bwork\s+from\s+home\b.*\$\d+", "flag"),
    ("adult", r"(?i)\b(xxx|escort|adult\s+chat)\b", "block"),
    ("pharmacy", r"(?i)\b(viagra|cialis|no\s+prescription)\b", "block"),
    ("ip link", r"https?://\d{1,3}(\.\d{1,3}){3}", "block"),
    ("shouting", r"[A-Z\s!]{60,}", "flag"),
    ("tax refund", r"(?i)\btax\s+refund\b", "flag"),
    ("package held", r"(?i)\bpackage\s+(is\s+)?(held|on\s+hold)\b", "block"),
    ("wire transfer", r"(?i)\bwire\s+transfer\b.*\burgent\b", "block"),
)

# Fifty destination countries: the US admits numeric senders (the
# benchmark's short codes) and refuses alphanumeric ones, as US carriers do.
SENDER_RULE_COUNTRIES = [
    "US",
    "CA",
    "MX",
    "BR",
    "AR",
    "CL",
    "CO",
    "PE",
    "GB",
    "IE",
    "FR",
    "DE",
    "ES",
    "IT",
    "PT",
    "NL",
    "BE",
    "CH",
    "AT",
    "SE",
    "NO",
    "DK",
    "FI",
    "PL",
    "CZ",
    "HU",
    "RO",
    "GR",
    "TR",
    "RU",
    "UA",
    "IN",
    "PK",
    "BD",
    "LK",
    "CN",
    "JP",
    "KR",
    "TW",
    "HK",
    "SG",
    "MY",
    "TH",
    "VN",
    "PH",
    "ID",
    "AU",
    "NZ",
    "AE",
    "SA",
]


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compliance_lines(admin_port: int) -> list[str]:
    lines = [
        "[admin]",
        f'listen = "{LOOPBACK}:{admin_port}"',
        f'tokens = [ {{ name = "bench", token = "{ADMIN_TOKEN}" }} ]',
        "[compliance]",
        'protected_sender_ids = ["APPLE", "AMAZON", "GOOGLE", "PAYPAL"]',
        # On, and far above what the benchmark sends one subscriber.
        "max_per_recipient_per_hour = 1000",
    ]
    for i, country in enumerate(SENDER_RULE_COUNTRIES):
        alphanumeric = ("refused", "registered", "allowed")[i % 3] if country != "US" else "refused"
        lines += [
            "[[sender_rules]]",
            f'country = "{country}"',
            f'alphanumeric = "{alphanumeric}"',
            'numeric = "allowed"',
        ]
    for name, pattern, action in CONTENT_PATTERNS:
        lines += [
            "[[content_rules]]",
            f"name = {_toml_string(name)}",
            f"pattern = {_toml_string(pattern)}",
            f'action = "{action}"',
        ]
    # An account that may send only its approved templates, in the mix.
    lines += [
        "[[accounts]]",
        'id = "templated"',
        'api_keys = ["templated-key"]',
        "templates_required = true",
        'credit = "1000"',
    ]
    return lines


async def load_opt_outs(admin_port: int, count: int = OPT_OUTS) -> None:
    """The benchmark account's opt-out list, through the operator API's
    import (one request, then every process reloads the account's list)."""
    body = "".join(f"+1646{i:07d}\n" for i in range(count)).encode()
    url = f"http://{LOOPBACK}:{admin_port}/admin/v1/accounts/bench/opt-outs/import"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/plain"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
        http.post(url, data=body, headers=headers) as resp,
    ):
        answer = await resp.json()
        if resp.status != 200 or answer.get("added") != count:
            raise RuntimeError(f"opt-out import failed: {resp.status} {answer}")
