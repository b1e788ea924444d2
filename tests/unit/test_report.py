"""What the tool prints: secrets masked everywhere, GitHub's output format."""

from __future__ import annotations

import subprocess
import sys

from ci_integration.report import Redactor, write_github_output

SECRET = "s3cr3t-v4lue-0123456789"


def test_secrets_are_masked_in_errors_and_tracebacks(tmp_path, base_env):
    blocker = tmp_path / SECRET
    blocker.write_text("a file where the store's folder should be")
    (tmp_path / "data").mkdir()
    env = {**base_env, "DEPLOY_TOKEN": SECRET, "CI_INTEGRATION_PROVIDER": "local"}
    result = subprocess.run(
        [sys.executable, "-m", "ci_integration", "--debug", "cache", "save", "data", "--key",
         "k", "--strict", "--store", str(blocker / "store")],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 3
    assert "Traceback" in result.stderr and "***" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_signed_urls_and_userinfo_are_masked():
    redactor = Redactor(set())
    text = redactor.redact(
        "GET https://acct.blob.core.windows.net/c/b?sv=2024&se=2026&sig=abcDEF%2B== failed; "
        "https://user:pa55word@registry.example.com/v2/ and "
        "https://s3.example.com/b/k?X-Amz-Credential=AKIA/x&X-Amz-Signature=deadbeef"
    )
    for secret in ("abcDEF", "pa55word", "deadbeef", "AKIA/x", "se=2026"):
        assert secret not in text


def test_short_values_are_not_masked_everywhere():
    # A 3-character "secret" would mask every "yes" in the log.
    assert Redactor({"yes", "a-long-secret"}).redact("yes a-long-secret") == "yes ***"


def test_github_output_heredoc_for_multiline_values(tmp_path):
    path = tmp_path / "out"
    write_github_output(path, {"one": "1", "many": "a\nb"})
    lines = path.read_text().splitlines()
    assert lines[0] == "one=1"
    assert lines[1].startswith("many<<ghadelimiter_") and lines[4] == lines[1].split("<<")[1]
    assert lines[2:4] == ["a", "b"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_ci_log_is_a_line_every_few_seconds_with_the_total_and_time_left():
    import io

    from ci_integration.report import Progress

    clock, log = FakeClock(), io.StringIO()
    progress = Progress("restoring deps", total=2 * 1024**3, stream=log, clock=clock, every=10)
    for _ in range(40):  # 40 s at 25.6 MiB a second
        clock.now += 1
        progress.advance(int(25.6 * 1024**2))
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0] == "restoring deps: 256.0 MiB of 2.0 GiB (12%), 25.6 MiB/s, 70 s left"
    assert lines[-1].startswith("restoring deps: 1024.0 MiB of 2.0 GiB (50%), 25.6 MiB/s")
    assert lines[-1].endswith(", 40 s left")
    assert "\r" not in log.getvalue()


def test_progress_with_no_total_says_bytes_and_rate_and_a_short_job_prints_nothing():
    import io

    from ci_integration.report import Progress

    clock, log = FakeClock(), io.StringIO()
    progress = Progress("saving deps", stream=log, clock=clock, every=10)
    clock.now += 5
    progress.advance(1024**2)
    progress.close()
    assert log.getvalue() == ""
    clock.now += 5
    progress.advance(1024**2)
    assert log.getvalue() == "saving deps: 2.0 MiB, 204.8 KiB/s\n"
