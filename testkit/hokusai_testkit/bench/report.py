"""What a run prints and writes: the Markdown tables (rows, variants, cold
bursts, steady streams) and the targets, each met or missed."""

from __future__ import annotations

from hokusai_testkit import harness
from hokusai_testkit.bench.rows import Row
from hokusai_testkit.bench.scenarios import STEADY_DELAY_MS, STEADY_EVERY_S
from hokusai_testkit.bench.summary import med


def fmt(v, spec=".1f", dash="–"):
    return dash if v is None else format(v, spec)


def table(summary: dict, all_rows: list[Row], bursts: list[dict], sizes: dict, a) -> str:
    head = ("| row | req/s | p50 µs | p99 µs | Δp99 vs none µs | 1 conn: p50 / p99 µs | "
            "1 conn: Δp99 vs none µs | Envoy CPU µs/req | "
            "Δ CPU vs none / no-op / api_key µs | CPU × none / no-op / api_key | "
            "req/s × none / no-op / api_key | Envoy core % | callouts/req | Envoy VmHWM MiB | .wasm |")
    ncols = head.count("|") - 1
    lines = [head, "|" + "---|" * ncols]
    for row in all_rows:
        s = summary.get(row.name)
        if s is None:
            lines.append(f"| {row.label} | failed: see below |" + " |" * (ncols - 2))
            continue
        trio = lambda p, spec: " / ".join(fmt(s[f"{p}_{b}"], spec) for b in ("none", "noop", "api_key_auth"))  # noqa: E731
        wasm = ""
        built = (row.so or harness.NATIVE) if row.native else row.wasm
        if built is not None:
            size = built.stat().st_size
            wasm = f"{size:,} B ({size / 1024:.1f} KiB){' .so' if row.native else ''}"
        lines.append(
            f"| {row.label} | {fmt(s['rps'], ',.0f')} | {fmt(s['p50_us'], '.0f')} | {fmt(s['p99_us'], '.0f')} "
            f"| {fmt(s['p99_d_none'], '+.0f')} | {fmt(s['c1_p50_us'], '.0f')} / {fmt(s['c1_p99_us'], '.0f')} "
            f"| {fmt(s['c1_p99_d_none'], '+.0f')} | {fmt(s['cpu_us_per_req'], '.1f')} | {trio('cpu_d', '+.1f')} "
            f"| {trio('cpu_x', '.2f')} | {trio('rps_x', '.2f')} | {fmt(s['envoy_core_pct'], '.0f')} "
            f"| {fmt(s['callouts_per_req'], '.3f')} | {fmt(s['vmhwm_kb'] / 1024 if s['vmhwm_kb'] else None, '.1f')} "
            f"| {wasm} |")
    variants = [r for r in all_rows if "@" in r.name and r.name in summary]
    if variants:
        lines += ["", "| variant row | Envoy CPU µs/req | vs the same row of this build: Δ CPU µs | CPU × |",
                  "|---|---|---|---|"]
        for row in variants:
            s = summary[row.name]
            lines.append(f"| {row.label} | {fmt(s['cpu_us_per_req'])} | {fmt(s.get('cpu_d_base'), '+.1f')} "
                         f"| {fmt(s.get('cpu_x_base'), '.3f')} |")
        lines.append("")
    for build, delay in sorted({(b["build"], b["delay_ms"]) for b in bursts}):
        bs = [b for b in bursts if b["delay_ms"] == delay and b["build"] == build]
        calls = [b["callouts"] for b in bs]
        label = (f"cold burst ({build}): {a.burst} concurrent requests, one new key, {a.burst_workers} workers, "
                 f"stand-in {'instant' if not delay else f'{delay} ms'}")
        per = ", ".join(str(c) for c in calls)
        lines.append(f"| {label} | | | | | | | | | | | | {max(calls)} callouts max (rounds: {per}; "
                     f"single-flight waits {med([b['single_flight_waits'] for b in bs]):.0f}) | | |")
    return "\n".join(lines)


def targets(summary: dict, bursts: list[dict], sizes: dict, a) -> list[tuple[str, str, str]]:
    out = []

    def check(name, value, ok, shown):
        out.append((name, shown if value is not None else "not measured",
                    "–" if value is None else ("met" if ok else "**missed**")))

    hit = summary.get("hit", {})
    v = hit.get("cpu_d_noop")
    check("cache hit ≤ 6 µs Envoy CPU/request above the no-op wasm row", v, v is not None and v <= 6,
          f"{fmt(v, '+.1f')} µs")
    v = summary.get("hit_rl", {}).get("cpu_d_hit")
    check("rate limit on ≤ +3 µs Envoy CPU/request over the cache hit", v, v is not None and v <= 3,
          f"{fmt(v, '+.1f')} µs")
    native = summary.get("native_hit", {})
    # Beside each native target, what the floor rows reach in the same run:
    # no filter at all, and a dynamic module that does nothing.
    floor = summary.get("native_noop", {}).get("cpu_x_api_key_auth")
    v = native.get("cpu_x_api_key_auth")
    check("native cache hit ≤ 1.05× api_key_auth Envoy CPU/request", v, v is not None and v <= 1.05,
          f"{fmt(v, '.3f')}× (the no-op dynamic module: {fmt(floor, '.3f')}×)")
    like = native.get("cpu_x_api_key_auth_like")
    check("native cache hit ≤ 1.05× the native-equivalent row (api_key_auth + prefix_rewrite + key-id header) "
          "Envoy CPU/request", like, like is not None and like <= 1.05, f"{fmt(like, '.3f')}×")
    v = native.get("rps_x_ext_authz")
    ceiling = summary.get("none", {}).get("rps_x_ext_authz")
    check("native cache hit ≥ 2× the ext_authz row's req/s (stand-in instant)", v, v is not None and v >= 2,
          f"{fmt(v, '.2f')}× (no filter at all: {fmt(ceiling, '.2f')}×)")
    v = summary.get("native_hit_rl", {}).get("cpu_d_native_hit")
    check("native: rate limit on ≤ +3 µs Envoy CPU/request over the native cache hit", v,
          v is not None and v <= 3, f"{fmt(v, '+.1f')} µs")
    for build, grl, rl in (("", "hit_grl", "hit_rl"), ("native: ", "native_hit_grl", "native_hit_rl")):
        g = summary.get(grl, {})
        v = g.get(f"cpu_d_{rl}")
        check(f"{build}global rate limit ≤ +10 µs Envoy CPU/request over the local one", v,
              v is not None and v <= 10, f"{fmt(v, '+.1f')} µs ({fmt(g.get('ratelimit_calls_per_req'), '.3f')} "
              "calls/request)")
        v = g.get(f"c1_p99_d_{rl}")
        check(f"{build}global rate limit 1-connection p99 ≤ +1 ms over the local one", v,
              v is not None and v <= 1000, f"{fmt(v, '+.0f')} µs")
    v = summary.get("hit_id", {}).get("cpu_d_hit")
    check("identity assertion on ≤ +2 µs Envoy CPU/request over the cache hit", v, v is not None and v <= 2,
          f"{fmt(v, '+.1f')} µs")
    v = summary.get("native_hit_id", {}).get("cpu_d_native_hit")
    check("native: identity assertion on ≤ +2 µs Envoy CPU/request over the native cache hit", v,
          v is not None and v <= 2, f"{fmt(v, '+.1f')} µs")
    v = hit.get("c1_p99_d_none")
    check("cache hit p99 ≤ 100 µs above no filter (1 connection: no queueing)", v,
          v is not None and v <= 100, f"{fmt(v, '+.0f')} µs")
    v = hit.get("p99_d_none")
    check(f"cache hit p99 ≤ 100 µs above no filter ({a.concurrency} connections: saturated, "
          "mostly queueing)", v, v is not None and v <= 100, f"{fmt(v, '+.0f')} µs")
    v = hit.get("rps_x_ext_authz")
    check("cache hit ≥ 2.5× the ext_authz row's req/s (stand-in instant)", v, v is not None and v >= 2.5,
          f"{fmt(v, '.2f')}×")
    v = hit.get("rps_x_ext_authz_5ms")
    check("cache hit ≥ 10× the ext_authz row's req/s (stand-in 5 ms)", v, v is not None and v >= 10,
          f"{fmt(v, '.2f')}×")
    v = max((b["callouts"] for b in bursts if b["build"] == "wasm"), default=None)
    check(f"cold burst ≤ 1 callout per worker ({a.burst_workers} workers)", v,
          v is not None and v <= a.burst_workers, f"{v} callouts (max over rounds and stand-in delays)")
    v = max((b["callouts"] for b in bursts if b["build"] == "native"), default=None)
    check(f"native cold burst: exactly 1 callout ({a.burst_workers} workers, one process-wide flight)", v,
          v == 1, f"{v} callouts (max over rounds and stand-in delays)")
    v = sizes["hokusai"]
    check(".wasm ≤ 400 KiB", v, v <= 400 * 1024, f"{v:,} B = {v / 1024:.1f} KiB")
    return out


def steady_table(steadies: list[dict], a) -> str:
    if not steadies:
        return ""
    lines = ["", "", f"Steady stream: one key, one request every {STEADY_EVERY_S * 1000:.0f} ms on one connection "
             f"for {a.steady_seconds:.0f} s, cache TTL 1 s, stand-in {STEADY_DELAY_MS} ms (medians over the rounds)",
             "", "| build | refresh-ahead | p50 µs | p99 µs | max µs | requests that waited for a callout "
             "(cache misses), per round | requests ≥ 5 ms | re-validations |", "|---|---|---|---|---|---|---|---|"]
    for build in ("wasm", "native"):
        for refresh in (False, True):
            ss = [s for s in steadies if s["build"] == build and s["refresh"] == refresh]
            if ss:
                lines.append(f"| {build} | {'on (50%)' if refresh else 'off'} | {med([s['p50_us'] for s in ss]):.0f} "
                             f"| {med([s['p99_us'] for s in ss]):.0f} | {med([s['max_us'] for s in ss]):.0f} "
                             f"| {', '.join(str(s['waited']) for s in ss)} of ~{ss[0]['requests']} "
                             f"| {', '.join(str(s['slow']) for s in ss)} | {med([s['refreshes'] for s in ss]):.0f} |")
    return "\n".join(lines)


def steady_targets(steadies: list[dict]) -> list[tuple[str, str, str]]:
    on = [s for s in steadies if s["refresh"]]
    if not on:
        return [("refresh-ahead: no request of a steady stream waits for a callout after the first",
                 "not measured", "–")]
    waited = max(s["waited"] for s in on)
    return [("refresh-ahead: no request of a steady stream waits for a callout after the first",
             f"{waited} waited (max over builds and rounds)", "met" if waited == 0 else "**missed**")]
