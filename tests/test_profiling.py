"""Link measurement, with a fake device whose transfers take a known time."""

import pytest

from cpcdrl_deploy.errors import CpcdrlError
from cpcdrl_deploy.profiling import measure_link


class FakeLink:
    name = "fake"

    def __init__(self, up_bps: float, down_bps: float, setup_s: float) -> None:
        self.up_bps, self.down_bps, self.setup_s = up_bps, down_bps, setup_s
        self.calls = 0

    def echo_rtt_ms(self) -> float:
        return 0.5

    def stream_s(self, n_bytes: int, upload: bool) -> float:
        self.calls += 1
        # every other try is slowed down by a stall, as on a throttled device: the faster one counts
        stall = 0.7 if self.calls % 2 else 0.0
        return self.setup_s + stall + n_bytes / (self.up_bps if upload else self.down_bps)


def test_measure_link_recovers_each_direction_despite_fixed_cost_and_stalls() -> None:
    lp = measure_link(FakeLink(150_000, 400_000, setup_s=0.3))
    assert lp.uplink_bytes_per_s == pytest.approx(150_000, rel=1e-6)
    assert lp.downlink_bytes_per_s == pytest.approx(400_000, rel=1e-6)
    assert lp.rtt_ms == 0.5


def test_measure_link_needs_ssh() -> None:
    class Local:
        name = "local"

    with pytest.raises(CpcdrlError, match="only be measured over SSH"):
        measure_link(Local())
