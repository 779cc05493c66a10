"""The study storage's cost per trial: Optuna's journal file against PostgreSQL (issue 18).

A search keeps its study in ``<logdir>/searches/journal.log`` (Optuna's
``JournalStorage(JournalFileBackend)``, a file lock and an fsync per write); its
trials can run on more processes through a shared ``RDBStorage`` instead. This
times what the storage adds to each trial, nothing else: ``study.ask`` (two float
parameters, the random sampler), ``trial.report`` of a few intermediate values and
``study.tell``, on both, in this one process, the kinds interleaved round by
round (A B, B A, ...), each round on a fresh study of each kind.

The PostgreSQL servers are private (``tb_retune.testing.postgres``, on 127.0.0.1):
``postgres`` is durable as a real server is (``fsync``, ``synchronous_commit`` on:
each commit waits for its WAL on disk, as the journal waits for its fsync),
``postgres_nofsync`` is the tests' server (all off: the SQL and the round trips only).

```sh
.venv/bin/python benchmarks/bench_storage.py --quick --json bench-storage.json
```
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import Profile, interleaved, log, median, pair_ratios, quiet, spread, write_result  # noqa: E402

KINDS = ("journal", "postgres", "postgres_nofsync")
#: Intermediate values reported per trial (a search reports its metric at each of a few evaluations).
REPORTS = 5


def _space() -> dict[str, Any]:
    from optuna.distributions import FloatDistribution

    return {"learning_rate": FloatDistribution(1e-3, 0.1, log=True), "momentum": FloatDistribution(0.0, 0.95)}


def run_trials(study: Any, trials: int, reports: int = REPORTS) -> dict[str, float]:
    """``trials`` x (ask, ``reports`` x report, tell) on ``study``: seconds, in all and per step."""
    space = _space()
    ask = report = tell = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask(space)
        t1 = time.perf_counter()
        value = trial.params["learning_rate"] * (1 + trial.params["momentum"])
        for step in range(reports):
            trial.report(value / (step + 1), step)
        t2 = time.perf_counter()
        study.tell(trial, value / reports)
        t3 = time.perf_counter()
        ask, report, tell = ask + (t1 - t0), report + (t2 - t1), tell + (t3 - t2)
    return {"total": ask + report + tell, "ask": ask, "report": report, "tell": tell}


def compare(*, rounds: int, trials: int, reports: int = REPORTS, profile: bool = False) -> dict[str, Any]:
    import optuna
    import sqlalchemy
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from tb_retune.testing.postgres import postgres_server

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    ms: dict[str, list[float]] = {k: [] for k in KINDS}  # per round: ms per trial
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}  # per round: this process's CPU ms per trial
    ops: dict[str, dict[str, list[float]]] = {k: {"ask": [], "report": [], "tell": []} for k in KINDS}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tbr-bench-storage-") as tmp, \
            postgres_server(durable=True) as durable_url, postgres_server() as fast_url:
        storages: dict[str, Any] = {
            "journal": JournalStorage(JournalFileBackend(os.path.join(tmp, "journal.log"))),
            "postgres": RDBStorage(durable_url),
            "postgres_nofsync": RDBStorage(fast_url),
        }
        try:
            def study(kind: str, name: str, seed: int) -> Any:
                return optuna.create_study(study_name=name, storage=storages[kind],
                                           sampler=optuna.samplers.RandomSampler(seed=seed))

            # Warm-up (connections, the first statements, the file's page cache), counting
            # the SQL statements a trial costs on PostgreSQL (not during the timed rounds).
            statements: list[str] = []
            engine = storages["postgres"].engine

            def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                statements.append(statement.split(None, 1)[0].upper())

            warmup = max(4, trials // 4)
            counted = study("postgres", "warmup", 0)
            sqlalchemy.event.listen(engine, "before_cursor_execute", count)
            run_trials(counted, warmup, reports)
            sqlalchemy.event.remove(engine, "before_cursor_execute", count)
            for kind in KINDS:
                run_trials(study(kind, "warmup" if kind != "postgres" else "warmup-2", 0), warmup, reports)
            for r, kind in interleaved(rounds, KINDS):
                s = study(kind, f"round-{r}", r)
                cpu0 = time.process_time()
                took = run_trials(s, trials, reports)
                cpu[kind].append((time.process_time() - cpu0) * 1e3 / trials)
                ms[kind].append(took["total"] * 1e3 / trials)
                ops[kind]["ask"].append(took["ask"] * 1e3 / trials)
                ops[kind]["report"].append(took["report"] * 1e3 / (trials * reports))
                ops[kind]["tell"].append(took["tell"] * 1e3 / trials)
                if all(len(ms[k]) == r + 1 for k in KINDS):  # the round's last kind
                    log(f"  round {r}: " + ", ".join(f"{k} {ms[k][-1]:.2f}" for k in KINDS) + " ms/trial")
            if profile:
                for kind in ("journal", "postgres"):
                    prof = Profile()
                    s = study(kind, "profile", 0)
                    prof.run(lambda s=s: run_trials(s, trials, reports))
                    out[f"profile_{kind}"] = prof.top()
        finally:
            for kind in ("postgres", "postgres_nofsync"):
                storages[kind].engine.dispose()
    ratios = {k: pair_ratios(ms[k], ms["journal"]) for k in ("postgres", "postgres_nofsync")}
    out.update({
        "storage_ms_per_trial_journal": median(ms["journal"]),
        "storage_ms_per_trial_postgres": median(ms["postgres"]),
        "storage_ms_per_trial_postgres_nofsync": median(ms["postgres_nofsync"]),
        "storage_postgres_vs_journal": median(ratios["postgres"]),
        "storage_postgres_nofsync_vs_journal": median(ratios["postgres_nofsync"]),
        "details": {
            "rounds": rounds, "trials_per_round": trials, "reports_per_trial": reports,
            "ms_per_trial": {k: {"median": median(v), "spread": spread(v), "rounds": [round(x, 3) for x in v]}
                             for k, v in ms.items()},
            "ratio_spread": {k: spread(v) for k, v in ratios.items()},
            # The client's side only: PostgreSQL's work is in its own processes.
            "cpu_ms_per_trial_median": {k: median(v) for k, v in cpu.items()},
            "sql_statements_per_trial": {
                "all": round(len(statements) / warmup, 1),
                **{kind: round(statements.count(kind) / warmup, 1) for kind in sorted(set(statements))}},
            "ms_per_call_median": {k: {op: median(v) for op, v in d.items()} for k, d in ops.items()},
            "postgres_server": {"postgres": "fsync, synchronous_commit, full_page_writes on",
                                "postgres_nofsync": "fsync, synchronous_commit, full_page_writes off",
                                "where": "127.0.0.1 TCP, psycopg2, one connection of SQLAlchemy's pool"},
        },
    })
    return out


def summary(result: dict[str, Any]) -> str:
    d = result["details"]
    m = d["ms_per_trial"]
    lines = [f"storage cost per trial (ask + {d['reports_per_trial']} reports + tell), {d['rounds']} rounds of "
             f"{d['trials_per_round']} trials, median ms (spread over rounds):"]
    for kind in KINDS:
        calls = d["ms_per_call_median"][kind]
        lines.append(f"  {kind:17s} {m[kind]['median']:7.2f} ms ({m[kind]['spread']}); ask {calls['ask']:.2f}, "
                     f"report {calls['report']:.2f} each, tell {calls['tell']:.2f}; CPU of this process "
                     f"{d['cpu_ms_per_trial_median'][kind]:.2f}")
    sql = d["sql_statements_per_trial"]
    lines.append(f"  SQL statements per trial on PostgreSQL: {sql['all']} ("
                 + ", ".join(f"{k} {v}" for k, v in sql.items() if k != "all") + ")")
    lines.append(f"  postgres / journal: {result['storage_postgres_vs_journal']:.2f}x "
                 f"({d['ratio_spread']['postgres']}); fsync off: {result['storage_postgres_nofsync_vs_journal']:.2f}x "
                 f"({d['ratio_spread']['postgres_nofsync']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 20 trials (under a minute on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    args = parser.parse_args(argv)
    quiet()
    rounds, trials = (5, 20) if args.quick else (11, 50)
    result = compare(rounds=rounds, trials=trials)
    print(summary(result))
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
