"""`mocolab channels` against a live server: add prints the masked target (never the URL), test sends through
a real receiver and exits 0 (1 when it was not delivered), log shows each attempt, and a refusal is one line
on stderr with exit status 2."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_notify import Receiver

from mocolab import cli
from server.core.config import Settings

from server_factories import LiveServer, Member, cli_member


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"notify_allow_nets": "127.0.0.1/32"})


@pytest.fixture
def member(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Member:
    return cli_member(live, monkeypatch)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def test_add_list_test_log_and_rm(live: LiveServer, member: Member, receiver: Receiver,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = receiver.url("/hooks/CLISECRETPATH")
    assert cli.run(["channels", "add", "ops", "--kind", "webhook", "--url", url, "--severity", "critical",
                    "--header", "Authorization: Bearer cli-token-1", "--cooldown", "600"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("channel 1 ops (webhook) -> http://127.0.0.1:") and "CLISECRETPATH" not in out
    assert cli.run(["channels", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:5] == ["1", "ops", "webhook", "yes", "(all)"] and "CLISECRETPATH" not in listed[1]
    assert cli.run(["channels", "test", "1"]) == 0
    assert " sent " in capsys.readouterr().out and receiver.requests[0].headers["authorization"] == \
        "Bearer cli-token-1"
    receiver.stop()
    assert cli.run(["channels", "test", "1"]) == 1
    assert cli.run(["channels", "log", "1"]) == 0
    log = capsys.readouterr().out
    assert " failed  test " in log and "ConnectError" in log and " 200 ok " in log
    for argv, message in ((["add", "bad", "--kind", "webhook", "--url", "http://10.0.0.1/x"],
                           "HTTP 422: url: the host '10.0.0.1' is a loopback, private or link-local address"),
                          (["add", "bad", "--kind", "webhook", "--url", url, "--header", "nocolon"],
                           "--header 'nocolon': expected 'Name: value'")):
        with pytest.raises(SystemExit) as exited:
            cli.main(["channels", *argv])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert cli.run(["channels", "rm", "1"]) == 0
    with pytest.raises(SystemExit):
        cli.main(["channels", "test", "1"])
    assert "HTTP 404: channel 1 not found" in capsys.readouterr().err
