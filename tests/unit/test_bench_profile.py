"""The bench's profile summary reads compiled frames (the mypyc build) as the
functions they are compiled from."""

from __future__ import annotations

import pytest

from bench.profile import compiled_frame, summarize


@pytest.mark.parametrize(
    ("func", "file", "expected"),
    [
        (
            "CPyDef_connectors___http_api___send_HttpApi_gen_____mypyc_generator_helper__",
            "__native_http_api.c",
            ("HttpApi.send", "connectors/http_api.py"),
        ),
        (
            "CPyDef_connectors___http_api___HttpApi____validate",
            "__native_http_api.c",
            ("HttpApi._validate", "connectors/http_api.py"),
        ),
        (
            "CPyDef_connectors___smpp___codec___decode",
            "__native_codec.c",
            ("decode", "connectors/smpp/codec.py"),
        ),
        (
            "CPyPy_router___store___GroupWriter___submit",
            "__native_store.c",
            ("GroupWriter.submit", "router/store.py"),
        ),
        ("CPyDef_router___engine___run_gen", "__native_engine.c", ("run", "router/engine.py")),
    ],
)
def test_a_compiled_frame_reads_as_its_source(
    func: str, file: str, expected: tuple[str, str]
) -> None:
    assert compiled_frame(func, file) == expected


@pytest.mark.parametrize(
    ("func", "file"),
    [
        ("CPyIter_Send", "misc_ops.c"),
        ("Py_DECREF", "object.h"),
        ("CPyDef_other___module___f", "__native_module.c"),
        ("send", "/usr/lib/python3.11/asyncio/events.py"),
    ],
)
def test_other_frames_are_not_compiled_ones(func: str, file: str) -> None:
    assert compiled_frame(func, file) is None


def test_compiled_functions_count_as_the_routers_own() -> None:
    raw = "\n".join(
        [
            "process 1:python -m smsrouter;run (asyncio/runners.py:118);"
            "CPyDef_router___store___write_gen (__native_store.c);write (libc.so.6) 3",
            "process 1:python -m smsrouter;run (asyncio/runners.py:118);"
            "CPyDef_router___store___write_gen (__native_store.c) 1",
        ]
    )
    out = summarize(raw)
    assert out["samples"] == 4
    assert out["python_self"][0] == {
        "function": "write (router/store.py)",
        "samples": 4,
        "pct": 100.0,
    }
    assert out["inclusive"][0]["function"] == "write (router/store.py)"
    (caller,) = out["native_callers"]["write (libc.so.6)"]
    assert caller["python"] == "write (router/store.py) <- run (asyncio/runners.py)"
