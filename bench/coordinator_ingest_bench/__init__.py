"""Coordinator ingest benchmark: one JSON line with the four figures of design section 6.

Run by ``bench/coordinator_ingest`` (``python -m coordinator_ingest_bench`` with this
folder's parent on the path). Everything runs as real processes on this machine: a
private Mosquitto started from the project's ``mosquitto.conf`` with the real password
file and ACL, the real ``rollguard-coordinator`` process (SQLite store in the run's
temporary directory), and simulated agents in separate processes.

Where things are:

- ``__main__``: the command line, the child roles, the phases in order, the JSON line.
- ``measure_ingest``: figure 1, ingest against a bare aiomqtt client (``bare_client``).
- ``measure_rollbacks``: figures 2 and 3, breach to rollback command, and a whole
  fleet's rollback acknowledged, timed by the ``probe``.
- ``measure_fleet``: figure 4, the largest fleet held at the guide's intervals.
- ``sim_agents``: many simulated hosts per process over ``lite_mqtt``, a light MQTT 5
  client.
- ``harness``: the broker, the coordinators under test (``coordinator_process``) and the
  child processes (``children``: a JSON-lines request/reply protocol).
- ``figures``: the targets and limits, and the quantile; ``cpu``: CPU use from ``/proc``.

``--quick`` runs tiny sizes (for the smoke test); ``-v`` logs progress to stderr.
"""
