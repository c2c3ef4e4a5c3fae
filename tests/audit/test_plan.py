"""Plans: the built-in ones load, `full` covers every registered attack, errors name line and field."""

from pathlib import Path

import pytest

from bastion.audit import builtin_plans, load_plan, parse_plan
from bastion.audit.kinds.evasion import build_attack
from bastion.core import ATTACKS, DEFENSES, ConfigError, ThreatModel


def _needs_user_input(name: str) -> bool:
    """An attack that cannot be built from its defaults (transfer: a surrogate checkpoint)."""
    try:
        ATTACKS.get(name)(threat=ThreatModel(norm=ATTACKS.get(name).norms[0]))
    except ConfigError:
        return True
    return False


def test_builtin_plans_load_and_full_covers_every_attack() -> None:
    assert builtin_plans() == ["blackbox", "full", "quick", "standard"]
    plans = {name: load_plan(name) for name in builtin_plans()}
    runnable = {name for name in ATTACKS.names("evasion") if not _needs_user_input(name)}
    full = plans["full"].scenarios
    assert {s.method for s in full if s.kind == "evasion"} == runnable and "transfer" not in runnable
    assert {s.method for s in full if s.kind == "membership"} == set(ATTACKS.names("membership"))
    assert {s.method for s in full if s.kind == "ood"} == set(DEFENSES.names("ood"))
    assert {s.method for s in full if s.kind == "backdoor"} == set(ATTACKS.names("backdoor"))
    assert {s.method for s in full if s.kind == "bitflip"} == set(ATTACKS.names("bitflip"))
    assert {s.method for s in full if s.kind == "split-extraction"} == set(ATTACKS.names("split-extraction"))
    assert {s.method for s in full if s.kind == "protection"} == set(ATTACKS.names("protection"))
    assert {s.method for s in full if s.kind == "extraction"} == set(ATTACKS.names("extraction"))
    assert {s.method for s in full if s.kind == "ownership"} == set(DEFENSES.names("ownership"))
    screened = {d for s in full if s.kind == "backdoor" for d in s.settings.detectors}
    assert screened == set(DEFENSES.names("backdoor-input")) | set(DEFENSES.names("backdoor-data"))
    kinds = {"evasion", "membership", "ood", "backdoor", "bitflip", "protection", "extraction"}
    assert {s.kind for s in plans["standard"].scenarios} == kinds
    assert {s.kind for s in plans["quick"].scenarios} == {"evasion"}  # quick stays a few minutes
    quick = plans["quick"]
    assert "pgd" in {s.key for s in quick.scenarios} and quick.n_max == 500
    for plan in plans.values():
        keys = [s.key for s in plan.scenarios]
        assert len(keys) == len(set(keys))


def test_eps_lists_expand_and_fractions_parse() -> None:
    plan = parse_plan("scenarios:\n  - attack: pgd\n    eps: [8/255, 0.1]\n    params: {steps: 7}\n    n: 3\n")
    assert [s.key for s in plan.scenarios] == ["pgd@0.0313725", "pgd@0.1"]
    assert plan.scenarios[0].settings.eps == pytest.approx(8 / 255) and plan.scenarios[0].settings.params == {
        "steps": 7
    }
    attack = build_attack(plan.scenarios[1].method, plan.scenarios[1].settings, seed=4)
    assert attack.threat.eps == 0.1 and attack.steps == 7 and attack.seed == 4  # type: ignore[attr-defined]


def test_plan_hash_follows_the_text() -> None:
    a = parse_plan("scenarios:\n  - attack: fgsm\n")
    b = parse_plan("scenarios:\n  - attack: fgsm\n    eps: 0.2\n")
    assert a.sha256 != b.sha256 and a.sha256 == parse_plan("scenarios:\n  - attack: fgsm\n").sha256


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenarios: []\n", "line 1: `scenarios` must be a non-empty list"),
        ("scenarios:\n  - attack: pgdd\n", "line 2: unknown attack 'pgdd'. Did you mean \"pgd\"?"),
        (
            "scenarios:\n  - attack: pgd\n    epz: 3\n",
            "line 3: unknown field 'epz' in scenario 1. Did you mean \"eps\"?",
        ),
        ("scenarios:\n  - attack: pgd\n    params: {steps: -1}\n", "line 3: scenario 1: pgd: steps must be >= 1"),
        ("scenarios:\n  - attack: pgd\n    params: {stepz: 2}\n", "line 3: pgd has no parameter 'stepz'"),
        ("scenarios:\n  - attack: pgd\n  - attack: pgd\n", "line 3: scenario key 'pgd' is used twice"),
        ("scenarios:\n  - attack: fgsm\n    eps: [0.1, abc]\n", "line 3: `eps` takes a number >= 0"),
        ("scenarios:\n  - attack: fgsm\n    n: 0\n", "line 3: `n` must be at least 1"),
        ("scenarios:\n  - attack: fgsm\n    n: 1\n    n: 2\n", "line 4: field 'n' appears twice"),
        ("scenarios:\n  - attack: fgsm\n    norm: l0\n", "line 3: fgsm supports the linf and l2 norms"),
        ("seed: x\nscenarios:\n  - attack: fgsm\n", "line 1: `seed` must be an integer"),
        ("scenarios: [\n", "line 2: not valid YAML"),
    ],
)
def test_errors_name_the_line_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_plan(text, source="mine.yaml")
    assert str(info.value).startswith("mine.yaml ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_plan_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown plan 'quik'\. Did you mean \"quick\""):
        load_plan("quik")
    with pytest.raises(ConfigError, match="does not exist"):
        load_plan(tmp_path / "nope.yaml")
    f = tmp_path / "p.yaml"
    f.write_text("scenarios:\n  - attack: fgsm\n")
    assert load_plan(f).name == "p" and load_plan(str(f)).source == str(f)


def test_the_kind_follows_from_what_a_scenario_runs() -> None:
    plan = parse_plan(
        "scenarios:\n"
        "  - attack: pgd\n"
        "  - attack: square\n    max_queries: 50\n    defenses: [aaa]\n"
        "  - attack: modified-entropy\n    n: 30\n"
        "  - detector: energy\n    sets: [uniform, inverted]\n    params: {temperature: 2}\n"
    )
    assert [(s.key, s.kind) for s in plan.scenarios] == [
        ("pgd", "evasion"),
        ("square+aaa", "evasion"),
        ("modified-entropy", "membership"),
        ("energy", "ood"),
    ]
    assert plan.scenarios[1].spec()["defenses"] == ("aaa",) and plan.scenarios[2].n == 30
    assert plan.scenarios[3].spec() == {
        "key": "energy",
        "family": "ood",
        "detector": "energy",
        "n": 500,
        "sets": ("uniform", "inverted"),
        "params": {"temperature": 2.0},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scenarios:\n  - attack: pgd\n    family: evasion\n", "line 3: `family` is not a field"),
        (
            "scenarios:\n  - eps: 0.3\n",
            "line 2: scenario 1 must name what it runs with one of `attack` or `detector` or `ownership`",
        ),
        ("scenarios:\n  - attack: pgd\n    detector: msp\n", "it has both attack and detector"),
        ("scenarios:\n  - detector: aaa\n", "unknown detector 'aaa' ('aaa' is in the postprocess family"),
        ("scenarios:\n  - detector: engery\n", 'Did you mean "energy"?'),
        ("scenarios:\n  - attack: loss-threshold\n    eps: 0.3\n", "line 3: unknown field 'eps' in scenario 1"),
        ("scenarios:\n  - detector: msp\n    sets: [noise]\n", "line 3: unknown OOD set 'noise'"),
        ("scenarios:\n  - detector: energy\n    params: {temperature: 0}\n", "temperature must be > 0"),
        ("scenarios:\n  - attack: pgd\n    defenses: [aaa]\n", "line 3: pgd is a white-box attack"),
        (
            "scenarios:\n  - attack: square\n    defenses: [aab]\n",
            "line 3: unknown postprocess defense 'aab'. Did you mean \"aaa\"",
        ),
    ],
)
def test_kind_errors_name_the_line_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_plan(text, source="mine.yaml")
    assert str(info.value).startswith("mine.yaml ") and message in str(info.value), str(info.value)
