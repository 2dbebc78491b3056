"""The side-by-side benchmark behind benches/run.py: the rows (rows), the
builds they time (builds), the stand-in's keys (keys), /proc readings
(procstat), the load generator (wrk), one Envoy per row (gateway), what one
run shares (context), the timed scenarios (scenarios), the perf profile
(profile), medians (summary), tables and targets (report), docs/benchmarks.md
(doc) and the command line (cli)."""
