"""Scheduler overhead of `atoms study`'s engine: 20 tasks of 1 s each on a LocalCluster of 2 workers.

The ideal is 10 s (20 tasks / 2 workers); the goal is <= 30 s. Prints each repeat and the median of 3.

    .venv/bin/python benchmarks/scheduler_overhead.py
"""
import statistics, time
from distributed import Client, LocalCluster, wait

TASKS, SECONDS, WORKERS, REPEATS, GOAL_S = 20, 1.0, 2, 3, 30.0


def one_second(i: int) -> int:
    "A task that takes one second of wall time and returns a small status."
    time.sleep(SECONDS)
    return i


def timed_batch(client: Client) -> float:
    "Wall seconds to submit and finish TASKS tasks."
    t0 = time.perf_counter()
    futures = [client.submit(one_second, i, pure=False) for i in range(TASKS)]
    wait(futures)
    assert sorted(f.result() for f in futures) == list(range(TASKS))
    return time.perf_counter() - t0


def main():
    t0 = time.perf_counter()
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(WORKERS)
        print(f'cluster start: {time.perf_counter() - t0:.1f} s')
        times = []
        for r in range(REPEATS):
            times.append(timed_batch(client))
            print(f'repeat {r + 1}: {times[-1]:.2f} s')
    median = statistics.median(times)
    ideal = TASKS * SECONDS / WORKERS
    print(f'{TASKS} tasks of {SECONDS:g} s on {WORKERS} workers: median {median:.2f} s of {REPEATS} '
          f'(ideal {ideal:g} s, overhead {median - ideal:.2f} s; goal <= {GOAL_S:g} s: '
          f'{"met" if median <= GOAL_S else "MISSED"})')


if __name__ == '__main__':
    main()
