"""Control-API state: FailureConfig validation and the Controller's script and dice."""

from __future__ import annotations

from collections import Counter

import pytest

from mock_provider.control import (
    KNOBS,
    PROBABILITIES,
    STREAM_ONLY,
    Controller,
    FailureConfig,
)
from mock_provider.faults import HAPPY, VOCABULARY, Fault, FaultError


def configured(body: dict[str, object]) -> Controller:
    controller = Controller()
    controller.configure(FailureConfig.parse(body))
    return controller


# --------------------------------------------------------------------- FailureConfig.parse


def test_empty_body_is_no_faults_with_default_knobs() -> None:
    config = FailureConfig.parse({})
    assert dict(config.probabilities) == {}
    assert dict(config.knobs) == KNOBS
    assert config.seed is None
    assert config.script == ()


def test_full_body() -> None:
    config = FailureConfig.parse(
        {
            "rate_limit": 0.25,
            "server_error": 0.5,
            "retry_after": 2,
            "chunk": 3,
            "stall_ms": 100,
            "seed": 42,
            "script": [{"fail": 429, "retry_after": 1}, {"model": "gpt-4o", "fail": 500}, {}],
        }
    )
    assert dict(config.probabilities) == {"rate_limit": 0.25, "server_error": 0.5}
    assert config.knobs["retry_after"] == 2.0
    assert config.knobs["chunk"] == 3.0
    assert config.knobs["stall_ms"] == 100.0
    assert config.knobs["ttft_ms"] == KNOBS["ttft_ms"]
    assert config.seed == 42
    assert [(entry.fault, entry.model) for entry in config.script] == [
        (Fault(fail=429, retry_after=1.0), None),
        (Fault(fail=500), "gpt-4o"),
        (HAPPY, None),
    ]


@pytest.mark.parametrize("name", PROBABILITIES)
def test_probability_aliases(name: str) -> None:
    config = FailureConfig.parse({f"{name}_probability": 0.5})
    assert dict(config.probabilities) == {name: 0.5}


@pytest.mark.parametrize("body", [[], "rate_limit=1", None, 3])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(FaultError, match="body must be a JSON object"):
        FailureConfig.parse(body)


def test_unknown_key_names_the_valid_keys() -> None:
    with pytest.raises(FaultError, match="unknown key 'fail_rate'") as info:
        FailureConfig.parse({"rate_limit": 0.1, "fail_rate": 0.5})
    message = str(info.value)
    for key in [*PROBABILITIES, *KNOBS, "seed", "script"]:
        assert key in message


@pytest.mark.parametrize("value", [1.5, -0.1, "0.5", True, None, [0.5]])
def test_probability_must_be_between_0_and_1(value: object) -> None:
    with pytest.raises(FaultError, match="rate_limit must be a probability between 0 and 1"):
        FailureConfig.parse({"rate_limit_probability": value})


def test_probabilities_may_add_up_to_exactly_one() -> None:
    body = {"timeout": 0.1, "rate_limit": 0.2, "server_error": 0.3, "overloaded": 0.4}
    assert sum(FailureConfig.parse(body).probabilities.values()) == pytest.approx(1.0)
    assert FailureConfig.parse({"reset": 1, "hang": 0}).probabilities["reset"] == 1.0


def test_probabilities_must_not_add_up_to_more_than_one() -> None:
    with pytest.raises(FaultError, match=r"probabilities add up to 1\.2; they must not exceed 1"):
        FailureConfig.parse({"rate_limit": 0.6, "server_error_probability": 0.6})


@pytest.mark.parametrize("name", sorted(KNOBS))
@pytest.mark.parametrize("value", [-1, "5", True, None])
def test_knobs_must_be_non_negative_numbers(name: str, value: object) -> None:
    with pytest.raises(FaultError, match=f"{name} must be a non-negative number"):
        FailureConfig.parse({name: value})


@pytest.mark.parametrize("value", ["42", 4.2, True, None])
def test_seed_must_be_an_integer(value: object) -> None:
    with pytest.raises(FaultError, match="seed must be an integer"):
        FailureConfig.parse({"seed": value})


@pytest.mark.parametrize("value", [{"fail": 500}, "fail=500", 3])
def test_script_must_be_a_list(value: object) -> None:
    with pytest.raises(FaultError, match="script must be a list of fault objects"):
        FailureConfig.parse({"script": value})


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([{}, "fail=500"], r"script\[1\] must be an object, got 'fail=500'"),
        ([{}, {}, {"fail": "sometimes"}], r"script\[2\]: unknown fail value 'sometimes'; valid: "),
        ([{"fail": 200}], r"script\[0\]: fail status 200 out of range"),
        ([{"fail": "²"}], r"script\[0\]: unknown fail value"),
        ([{}, {"explode": 1}], r"script\[1\]: unknown fault parameter 'explode'; valid: "),
        ([{"stall_chunk": 2}], r"script\[0\]: stall_chunk needs stall_ms"),
        ([{"delay": -1}], r"script\[0\]: delay must be >= 0"),
        ([{}, {}, {}, {"model": 4}], r"script\[3\]\.model must be a string"),
        ([{"stream": True}], r"script\[0\]: unknown fault parameter 'stream'"),
    ],
)
def test_bad_script_entries_name_their_position(script: list[object], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        FailureConfig.parse({"script": script})


def test_every_fault_name_is_allowed_in_a_script_entry() -> None:
    entry = dict.fromkeys(VOCABULARY, 1) | {"fail": "timeout", "no_done": True}
    (parsed,) = FailureConfig.parse({"script": [entry]}).script
    assert parsed.fault.fail == "timeout"
    assert parsed.fault.stall_chunk == 1


def test_to_json_round_trips() -> None:
    body: dict[str, object] = {
        "rate_limit": 0.5,
        "seed": 7,
        "chunk": 4,
        "script": [{"model": "gpt-4o", "fail": 429, "retry_after": 1}, {}],
    }
    shown = FailureConfig.parse(body).to_json()
    assert shown["probabilities"] == {"rate_limit": 0.5}
    assert shown["seed"] == 7
    assert shown["chunk"] == 4.0
    assert shown["script"] == body["script"]
    assert FailureConfig.parse(
        {**{k: v for k, v in shown.items() if k != "probabilities"}, **shown["probabilities"]}
    ) == FailureConfig.parse(body)


# ------------------------------------------------------------------------------ Controller


def test_unconfigured_controller_is_always_happy() -> None:
    controller = Controller()
    assert all(controller.next_fault("gpt-4o", stream) is HAPPY for stream in (False, True) * 50)


def test_script_is_consumed_fifo_then_happy() -> None:
    controller = configured({"script": [{"fail": 429, "retry_after": 1}, {"fail": 500}, {}]})
    faults = [controller.next_fault("gpt-4o", False) for _ in range(5)]
    assert faults == [Fault(fail=429, retry_after=1.0), Fault(fail=500), HAPPY, HAPPY, HAPPY]


def test_model_scoped_entries_are_only_consumed_by_that_model() -> None:
    controller = configured(
        {
            "script": [
                {"model": "claude-haiku-4-5", "fail": 529},
                {"fail": 500},
                {"model": "gpt-4o", "fail": 503},
                {"model": "claude-haiku-4-5", "fail": "reset"},
            ]
        }
    )
    assert controller.next_fault("gpt-4o", False) == Fault(fail=500)  # skips the haiku entry
    assert controller.next_fault("gpt-4o", False) == Fault(fail=503)
    assert controller.next_fault("gpt-4o", False) is HAPPY
    assert controller.next_fault(None, False) is HAPPY  # no model: only unscoped entries
    assert controller.next_fault("claude-haiku-4-5", True) == Fault(fail=529)
    assert controller.next_fault("claude-haiku-4-5", True) == Fault(fail="reset")
    assert controller.next_fault("claude-haiku-4-5", True) is HAPPY


def test_script_goes_before_probabilities() -> None:
    controller = configured({"server_error": 1.0, "script": [{}, {"fail": 429}]})
    assert controller.next_fault("m", False) == HAPPY  # "{}" is a scripted success
    assert controller.next_fault("m", False) == Fault(fail=429)
    assert controller.next_fault("m", False) == Fault(fail=500)


def test_reset_and_reconfigure_replace_everything() -> None:
    controller = configured({"reset": 1.0, "script": [{"fail": 500}]})
    controller.reset()
    assert controller.next_fault("m", False) is HAPPY
    assert controller.snapshot()["script_remaining"] == []
    controller.configure(FailureConfig.parse({"script": [{"fail": 502}]}))
    assert controller.next_fault("m", False) == Fault(fail=502)
    assert controller.next_fault("m", False) is HAPPY


SEEDED = {
    "seed": 1234,
    "timeout": 0.05,
    "rate_limit": 0.2,
    "server_error": 0.1,
    "overloaded": 0.05,
    "stream_cut": 0.1,
}


def outcomes(controller: Controller, draws: int, stream: bool = True) -> list[str]:
    return [controller.next_fault("gpt-4o", stream).outcome for _ in range(draws)]


def test_seeded_sequence_repeats_exactly() -> None:
    controller = configured(SEEDED)
    first = outcomes(controller, 200)
    controller.configure(FailureConfig.parse(SEEDED))  # configuring again restarts the dice
    assert outcomes(controller, 200) == first
    assert outcomes(configured(SEEDED), 200) == first  # and so does a fresh controller
    assert len(set(first)) > 3
    assert outcomes(configured({**SEEDED, "seed": 4321}), 200) != first


def test_seeded_frequencies_match_the_probabilities() -> None:
    draws = 4000
    counts = Counter(outcomes(configured(SEEDED), draws, stream=True))
    expected = {
        "timeout": 0.05,
        "429": 0.2,
        "500": 0.1,
        "529": 0.05,  # overloaded: next_fault's default status is Anthropic's 529
        "stream_cut": 0.1,
    }
    expected["ok"] = 1 - sum(expected.values())
    assert set(counts) == set(expected)
    for outcome, probability in expected.items():
        assert counts[outcome] / draws == pytest.approx(probability, abs=0.03), outcome


def test_stream_only_faults_are_happy_for_non_streaming_requests() -> None:
    for name in STREAM_ONLY:
        controller = configured({name: 1.0})
        assert controller.next_fault("gpt-4o", False) is HAPPY, name
        assert controller.next_fault("gpt-4o", True) is not HAPPY, name


def test_stream_only_draws_still_consume_the_random_sequence() -> None:
    body = {"seed": 9, "stream_cut": 0.5, "rate_limit": 0.25}
    streaming = outcomes(configured(body), 100, stream=True)
    plain = outcomes(configured(body), 100, stream=False)
    assert plain == [("ok" if o == "stream_cut" else o) for o in streaming]


KNOBBED = {"retry_after": 2, "chunk": 3, "stall_ms": 40, "ttft_ms": 50, "timeout_ms": 60}


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("timeout", Fault(fail="timeout", timeout_ms=60)),
        ("rate_limit", Fault(fail=429, retry_after=2.0)),
        ("server_error", Fault(fail=500)),
        ("overloaded", Fault(fail=503, retry_after=2.0)),
        ("reset", Fault(fail="reset")),
        ("hang", Fault(fail="hang")),
        ("stream_cut", Fault(fail_chunk=3)),
        ("stream_stall", Fault(stall_chunk=3, stall_ms=40)),
        ("malformed_chunk", Fault(malformed_chunk=3)),
        ("slow_first_token", Fault(ttft_ms=50)),
    ],
)
def test_each_probability_injects_its_fault_with_the_knobs(name: str, fault: Fault) -> None:
    assert set(PROBABILITIES) >= {name}
    controller = configured({name: 1.0, **KNOBBED})
    assert controller.next_fault("gpt-4o", True, overloaded_status=503) == fault


def test_overloaded_status_is_the_flavours_and_retry_after_zero_means_none() -> None:
    controller = configured({"overloaded": 1.0, "rate_limit_probability": 0})
    assert controller.next_fault("claude-haiku-4-5", False) == Fault(fail=529)
    assert controller.next_fault("gpt-4o", False, overloaded_status=503) == Fault(fail=503)
    assert configured({"rate_limit": 1}).next_fault("m", False) == Fault(fail=429)


def test_knob_defaults_reach_the_faults() -> None:
    assert configured({"timeout": 1}).next_fault("m", False).timeout_ms == KNOBS["timeout_ms"]
    assert configured({"stream_cut": 1}).next_fault("m", True).fail_chunk == KNOBS["chunk"]
    assert configured({"slow_first_token": 1}).next_fault("m", False).ttft_ms == KNOBS["ttft_ms"]


def test_snapshot_shows_config_remaining_script_and_vocabulary() -> None:
    controller = configured({"rate_limit": 0.5, "seed": 3, "script": [{"fail": 500}, {}]})
    controller.next_fault("m", False)
    snapshot = controller.snapshot()
    assert snapshot["probabilities"] == {"rate_limit": 0.5}
    assert snapshot["seed"] == 3
    assert snapshot["script"] == [{"fail": 500}, {}]
    assert snapshot["script_remaining"] == [{}]
    assert set(snapshot["vocabulary"]) == set(VOCABULARY)
    for knob, default in KNOBS.items():
        assert snapshot[knob] == default
