from real_assets.core.progress import Progress, parse_progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_reports_first_throttled_and_last_update_with_rate_and_eta():
    clock, lines = FakeClock(), []
    progress = Progress("embed", total=100, report=lines.append, unit="texts", every_s=5.0, clock=clock)
    progress.update(10)  # first update: always reported
    clock.now = 1.0
    progress.update(10)  # within 5 s: silent
    clock.now = 6.0
    progress.update(10, loss=0.5)  # 30 done in 6 s
    clock.now = 7.0
    progress.update(done=100)  # finished: always reported
    assert len(lines) == 3
    fields = parse_progress(lines[1])
    assert fields["done"] == 30 and fields["total"] == 100 and fields["loss"] == 0.5
    assert abs(fields["rate"] - 5.0) < 1e-9 and abs(fields["eta_s"] - 14.0) < 1e-9
    assert "30/100 texts (30%)" in lines[1]
    assert parse_progress(lines[2])["done"] == 100


def test_parse_ignores_other_messages():
    assert parse_progress("step finished") is None
    assert parse_progress("progress but no json") is None
