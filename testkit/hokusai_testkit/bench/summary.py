"""Medians over the rounds, and each row's ratios and differences to the
base rows, taken within each round first."""

from __future__ import annotations

import statistics

from hokusai_testkit.bench.rows import Row


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(results: list[dict], all_rows: list[Row]) -> dict:
    by_round: dict[int, dict[str, dict]] = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["row"]] = r
    summary = {}
    for row in all_rows:
        mine = [rr[row.name] for rr in by_round.values() if row.name in rr]
        if not mine:
            continue
        s = {k: med([m[k] for m in mine]) for k in
             ("rps", "p50_us", "p99_us", "cpu_us_per_req", "cpu_sched_us_per_req", "envoy_core_pct",
              "standins_core_pct", "wrk_core_pct", "machine_busy_pct", "other_core_pct",
              "callouts_per_req", "vmhwm_kb",
              "c1_p50_us", "c1_p99_us")}
        s["rounds"] = len(mine)
        calls = [m["filter_counters"].get("ratelimit.call", 0) / m["requests"] for m in mine
                 if m.get("filter_counters") and m.get("requests")]
        s["ratelimit_calls_per_req"] = med(calls) if calls else None
        for base in ("none", "noop", "api_key_auth", "api_key_auth_like", "hit", "native_hit", "miss",
                     "native_miss", "hit_rl", "native_hit_rl"):
            rps_x, cpu_x, cpu_d, p99_d, c1_d = [], [], [], [], []
            for rr in by_round.values():
                if row.name in rr and base in rr:
                    me, b = rr[row.name], rr[base]
                    rps_x.append(me["rps"] / b["rps"])
                    cpu_x.append(me["cpu_us_per_req"] / b["cpu_us_per_req"])
                    cpu_d.append(me["cpu_us_per_req"] - b["cpu_us_per_req"])
                    p99_d.append(me["p99_us"] - b["p99_us"])
                    if me["c1_p99_us"] is not None and b["c1_p99_us"] is not None:
                        c1_d.append(me["c1_p99_us"] - b["c1_p99_us"])
            s[f"rps_x_{base}"] = med(rps_x)
            s[f"cpu_x_{base}"] = med(cpu_x)
            s[f"cpu_d_{base}"] = med(cpu_d)
            s[f"p99_d_{base}"] = med(p99_d)
            s[f"c1_p99_d_{base}"] = med(c1_d)
        base_name = row.name.split("@", 1)[0]
        if base_name != row.name:
            pairs = [(rr[row.name], rr[base_name]) for rr in by_round.values() if row.name in rr and base_name in rr]
            s["cpu_d_base"] = med([me["cpu_us_per_req"] - b["cpu_us_per_req"] for me, b in pairs])
            s["cpu_x_base"] = med([me["cpu_us_per_req"] / b["cpu_us_per_req"] for me, b in pairs])
        for peer in ("ext_authz", "ext_authz_5ms"):
            xs = [rr[row.name]["rps"] / rr[peer]["rps"] for rr in by_round.values()
                  if row.name in rr and peer in rr]
            s[f"rps_x_{peer}"] = med(xs)
        summary[row.name] = s
    return summary
