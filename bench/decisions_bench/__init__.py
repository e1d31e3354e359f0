"""Decision-quality benchmark: how often the engine's judgement is right, one JSON line.

Run by ``bench/decisions`` (``python -m decisions_bench`` with this folder's parent and
the checkout on the path). A corpus of scenarios written for it (``scenarios``) runs
through the real engine and the deterministic fleet simulator (``tests.engine.sim``)
over many seeds, once with probes only (5 requests per 10 s per host) and once with real
traffic on top (20 requests/s per host, with latency histograms): 10 hosts, the guide's
production defaults (canary 10 %, 1 h first bake, 1 % errors, 1000 ms p95, and the
canary-versus-baseline comparison enforced). Each run ends at the end of the first bake
(or at its rollback); the engine runs that hour in well under a second.

- ``scenarios``: the classes (good releases as A/A runs with per-run noise, each rule's
  breach, subtle regressions, fleet-wide incidents, host loss) and what each expects.
- ``runs``: one seeded run of a scenario -> a typed ``Run``; many of them in worker
  processes.
- ``__main__``: the command line and the summary (false-rollback rate, detection rate
  and median time to decision per class, incidents blamed on the release).

``--quick`` runs a few seeds per class (for the smoke test).
"""
