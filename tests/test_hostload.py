"""The host sampler's shares per window from fabricated CPU times, the bench's summary of them, and the sampler
itself."""

import time

import psutil
import pytest

from cpcdrl_deploy.deploy.bench import host_load_summary, summary_lines
from cpcdrl_deploy.devices.hostload import HostSampler, load_in_windows

T = type(psutil.cpu_times())  # the platform's own times type, so every field the code reads exists


def times(**kw) -> T:
    return T(**{f: float(kw.get(f, 0.0)) for f in T._fields})


def test_shares_per_window_from_cumulative_times() -> None:
    # one CPU: between t=0 and t=2, 1 s busy, 0.5 s stolen, 0.5 s idle; between t=2 and t=4 all idle
    samples = [
        (0.0, [times(user=0, idle=0, steal=0)]),
        (2.0, [times(user=1, idle=0.5, steal=0.5)]),
        (4.0, [times(user=1, idle=2.5, steal=0.5)]),
    ]
    w = load_in_windows(samples, [(0.1, 1.9), (2.0, 4.0), (5.0, 6.0)])
    assert w[0] == {
        "seconds": 2.0,
        "busy_pct": [50.0],
        "steal_pct": [25.0],
    }  # the window widens to the samples around it
    assert w[1] == {"seconds": 2.0, "busy_pct": [0.0], "steal_pct": [0.0]}
    assert w[2] is None  # after the last sample: nothing measured it
    assert load_in_windows(samples[:1], [(0.0, 1.0)]) == [None]


def test_summary_pairs_server_speed_with_steal_per_round() -> None:
    per_round = [
        {"seconds": 5.0, "busy_pct": [60.0, 40.0], "steal_pct": [s, 1.0]} for s in (2.0, 10.0, 30.0, 5.0, 20.0)
    ] + [None]
    server = {"rounds": [0, 1, 2, 3, 4, 5], "per_round": [1.0, 1.3, 2.0, 1.1, 1.6, 1.0]}
    hl = host_load_summary(per_round, server)
    assert hl["server_vs_steal_spearman"] == pytest.approx(1.0)
    assert (
        hl["steal_pct_max_cpu_median"] == 10.0
        and hl["steal_pct_max_cpu_max"] == 30.0
        and hl["busy_pct_median_per_cpu"] == [60.0, 40.0]
    )
    report = {"plans": [], "edge": "pi", "rounds": 6, "reference": "p0", "fidelity": {}, "host_load": hl}
    assert any("stolen by the hypervisor 10.0 %" in line and "Spearman 1.00" in line for line in summary_lines(report))
    assert host_load_summary([None, None], server) is None


def test_sampler_records_every_cpu_until_stopped() -> None:
    with HostSampler(interval_s=0.05) as s:
        t0 = time.time()
        time.sleep(0.3)
        t1 = time.time()
    n = len(s.samples)
    assert n >= 3 and all(len(cpus) == len(psutil.cpu_times(percpu=True)) for _, cpus in s.samples)
    time.sleep(0.1)
    assert len(s.samples) == n  # stopped with the block
    (w,) = load_in_windows(s.samples, [(t0, t1)])
    assert (
        w is not None
        and all(0.0 <= b <= 100.0 for b in w["busy_pct"])
        and all(0.0 <= x <= 100.0 for x in w["steal_pct"])
    )
