"""Plugins in JavaScript, Python and C against their Rust counterparts, in one
run: component size, build time, compile time when loaded, and the mean time
of one hook call (the server's waraka_plugin_hook_seconds) over CALLS calls
on one connection, each language's plugin and the Rust one in servers of the
same chain, one after the other. Run through bench/languages.sh (a release
waraka); the examples are built from source with `waraka plugin build`."""

import os
import shutil
import smtplib
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "py"))
from harness import (ROOT, Waraka, compile_ms, example_plugin, free_port, hook_calls,  # noqa: E402
                     install_plugin, timed_build)

CALLS = int(os.environ.get("CALLS", "500"))


def rcpts(addresses):
    def send(port):
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.ehlo("client.test")
            for i in range(CALLS):
                s.mail("a@sender.test")
                s.rcpt(addresses(i))
                s.rset()
    return send


def messages(port):
    raw = (b"From: a@sender.test\r\nTo: rcpt@example.com\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
           b"Subject: bench\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.test")
        for _ in range(CALLS):
            s.sendmail("a@sender.test", ["rcpt@example.com"], raw)


# language, example, SDK files, the plugin's name, the Rust plugin it is compared
# with, the hook, the chain, the traffic
CASES = [
    ("c", "examples/c/rcpt_to.in_host_list", ["sdk/c/waraka.h", "sdk/c/waraka.c"], "rcpt_to.in_host_list",
     "rcpt_to.in_host_list", "rcpt", ["rcpt_to.in_host_list", "queue/discard"],
     rcpts(lambda i: f"user{i}@example.com")),
    ("js", "examples/js/rcpt_to.disposable", ["sdk/js/waraka.js"], "rcpt_to.disposable",
     "rcpt_to.disposable", "rcpt", ["rcpt_to.disposable", "rcpt_to.in_host_list", "queue/discard"],
     rcpts(lambda i: f"user{i}-29991231@example.com")),
    ("python", "examples/python/data.rfc5322_header_checks", ["sdk/python/waraka_plugin.py"],
     "data.rfc5322_header_checks", "headers", "data-post", ["rcpt_to.in_host_list", "headers", "queue/discard"],
     messages),
]


def per_call(chain, plugin, hook, traffic, setup):
    """Mean seconds per HOOK call of PLUGIN, and the compile time logged."""
    metrics = free_port()

    def prepare(server):
        server.edit("waraka.toml", lambda t: t + f'\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n')
        setup(server)

    server = Waraka(chain, setup=prepare)
    try:
        loaded = server.wait_for_log(rf"plugin loaded plugin={plugin} ", timeout=600)
        traffic(server.port)
        calls, seconds = hook_calls(metrics, plugin, hook)
        assert calls == CALLS, (plugin, calls)
        return seconds / calls, compile_ms(loaded)
    finally:
        server.stop()


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lang, example, sdk, name, rust, hook, chain, traffic in CASES:
            root = example_plugin(ROOT / example, [ROOT / f for f in sdk], tmp)
            wasm, build_s = timed_build(root)

            def install(server, root=root, wasm=wasm, name=name, rust=rust):
                if rust != name:  # the language's plugin takes the Rust one's place in the chain
                    server.edit("waraka.toml", lambda t: t.replace(f'"{rust}"', f'"{name}"'))
                    (server.dir / "plugins" / f"{rust}.wasm").unlink()
                install_plugin(server, wasm, name)
                for ini in root.glob("*.ini"):
                    shutil.copy(ini, server.dir / "config" / ini.name)

            lang_call, lang_compile = per_call(chain, name, hook, traffic, install)
            rust_call, _ = per_call(chain, rust, hook, traffic, lambda server: None)
            rows.append((lang, name, wasm.stat().st_size, build_s, lang_compile, lang_call, rust_call))

    print(f"\n{CALLS} calls per plugin, release build, one run\n")
    print(f"{'language':8} {'plugin':28} {'size':>9} {'build':>7} {'compile':>9} {'per call':>9} "
          f"{'rust':>8} {'ratio':>6}")
    for lang, name, size, build_s, compile_ms_, call, rust_call in rows:
        print(f"{lang:8} {name:28} {size / 1e6:8.2f}M {build_s:6.1f}s {compile_ms_ / 1000:8.2f}s "
              f"{call * 1e6:7.0f}us {rust_call * 1e6:6.0f}us {call / rust_call:6.1f}")


if __name__ == "__main__":
    main()
