from pathlib import Path

import pytest

from paser.pipelines.config import ConfigError, SelectConfig, apply_override, config_to_dict, load_config

SHIPPED_CONFIGS = sorted((Path(__file__).parents[2] / "pipelines" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads(path):
    config = load_config(SelectConfig, path)
    assert config.selection.strategy == "paser"
    assert config_to_dict(config)["corpus"]["path"]


def test_shipped_configs_exist():
    assert SHIPPED_CONFIGS


ACCELERATE_CONFIGS = sorted((Path(__file__).parents[2] / "pipelines" / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda path: path.name)
def test_shipped_accelerate_configs_load_with_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_machines == 1
    assert not config.use_cpu


def test_dotted_overrides_keep_yaml_types():
    config = load_config(
        SelectConfig,
        None,
        ["corpus.path=rows.jsonl", "selection.budget=0.05", "clustering.n_clusters=7", "selection.options.ccg=false"],
    )
    assert config.selection.budget == 0.05
    assert config.clustering.n_clusters == 7
    assert config.selection.options == {"ccg": False}
    assert config.corpus.path == "rows.jsonl"


def test_a_budget_count_is_accepted_where_a_fraction_is_declared():
    config = load_config(SelectConfig, None, ["corpus.path=rows.jsonl", "selection.budget=500"])
    assert config.selection.budget == 500


def test_a_token_budget_is_kept_as_written():
    config = load_config(SelectConfig, None, ["corpus.path=rows.jsonl", "selection.budget=200000t"])
    assert config.selection.budget == "200000t"
    assert config_to_dict(config)["selection"]["budget"] == "200000t"


def test_unknown_key_is_refused_with_the_known_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) budgett.*known: strategy, budget"):
        load_config(SelectConfig, None, ["corpus.path=rows.jsonl", "selection.budgett=0.1"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="selection.seed"):
        load_config(SelectConfig, None, ["corpus.path=rows.jsonl", "selection.seed=abc"])


def test_missing_corpus_is_refused():
    with pytest.raises(ConfigError, match="missing required key.*corpus"):
        load_config(SelectConfig, None, [])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found.*nope.yaml"):
        load_config(SelectConfig, tmp_path / "nope.yaml")


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key=value"):
        apply_override({}, "selection.budget")


def test_an_unknown_long_text_mode_names_the_key_and_the_known_modes():
    with pytest.raises(ConfigError, match="unknown embedding.long_text 'split'; known: truncate, chunks"):
        load_config(SelectConfig, None, ["corpus.path=rows.jsonl", "embedding.long_text=split"])


@pytest.mark.parametrize(
    ("flags", "key", "expected"),
    [
        (["--out", "runs/exp #2"], "out", "runs/exp #2"),
        (["--out", "@results"], "out", "@results"),
        (["--out", "yes"], "out", "yes"),
        (["--corpus", "data #1.jsonl"], "corpus.path", "data #1.jsonl"),
        (["--original", "null"], "models.original", "null"),
        (["--budget", "1e3"], "selection.budget", 1000),
        (["--budget", "0.05"], "selection.budget", 0.05),
        (["--budget", "200000t"], "selection.budget", "200000t"),
        (["--seed", "3"], "selection.seed", 3),
    ],
)
def test_select_flags_reach_the_config_verbatim(flags, key, expected):
    from paser.pipelines.cli import build_parser, select_config

    config = select_config(build_parser().parse_args(["select", "--pruned", "p", "--corpus", "c.jsonl", *flags]))
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


def test_set_values_are_yaml_with_scientific_numbers_and_bad_yaml_is_one_error():
    config = load_config(SelectConfig, None, ["models.pruned=p", "corpus.path=c.jsonl", "selection.budget=1e3"])
    assert config.selection.budget == 1000.0
    with pytest.raises(ConfigError, match=r"override 'out=\[1': the value is not valid YAML"):
        load_config(SelectConfig, None, ["models.pruned=p", "corpus.path=c.jsonl", "out=[1"])


def test_set_overrides_win_over_flags():
    from paser.pipelines.cli import build_parser, select_config

    args = build_parser().parse_args(
        ["select", "--pruned", "p", "--corpus", "c.jsonl", "--seed", "3", "--set", "selection.seed=4"]
    )
    assert select_config(args).selection.seed == 4


def test_an_unknown_engine_is_refused_listing_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown engine 'rey'; known: local, ray; did you mean ray\?"):
        load_config(SelectConfig, None, ["corpus.path=rows.jsonl", "engine=rey"])


def test_a_flat_recovery_section_sets_the_shared_and_the_objectives_settings():
    from paser.pipelines.run import DEMO_CONFIG, RunConfig
    from paser.recovery.objectives.distill_config import DistillObjectiveConfig

    section = {"objective": "distill", "learning_rate": 0.001, "sft_weight": 0.5}
    config = load_config(RunConfig, DEMO_CONFIG, ["recovery.temperature=2"], values={"recovery": section})
    assert config.recovery.learning_rate == 0.001
    assert config.recovery.objective_config == DistillObjectiveConfig(sft_weight=0.5, temperature=2)


def test_a_recovery_key_of_another_objective_is_one_error_naming_its_objective():
    from paser.pipelines.run import RunConfig

    with pytest.raises(ConfigError) as refused:
        load_config(RunConfig, None, ["recovery.objective=sft", "recovery.on_policy_fraction=0.5"])
    assert str(refused.value) == "config.recovery: on_policy_fraction is a setting of objective on_policy, not of 'sft'"


def test_an_objective_setting_of_the_wrong_type_names_the_key():
    from paser.pipelines.run import RunConfig

    with pytest.raises(ConfigError, match=r"recovery\.objective_config\.dpo_beta: expected float"):
        load_config(RunConfig, None, ["recovery.objective=dpo", "recovery.dpo_beta=high"])


def test_a_run_config_written_out_reads_back_with_a_flat_recovery_section():
    import yaml

    from paser.pipelines.config import build_config
    from paser.pipelines.run import RunConfig, load_run_config

    config = load_run_config(None, ["recovery.objective=distill", "recovery.sft_weight=0.25"])
    written = yaml.safe_load(yaml.safe_dump(config_to_dict(config)))
    assert written["recovery"]["sft_weight"] == 0.25 and "objective_config" not in written["recovery"]
    assert build_config(RunConfig, written) == config


RUN_HEAD = "corpus: {path: builtin:demo}\nmodels: {original: smollm2, pruned: pruned}\n"


def test_a_yaml_number_with_an_exponent_and_no_dot_is_read_as_the_float_it_is(tmp_path):
    from paser.pipelines.run import RunConfig, load_run_config

    # PyYAML (YAML 1.1) reads 1e-3 as the string "1e-3"; a float field takes it as 0.001.
    path = tmp_path / "run.yaml"
    path.write_text(f"{RUN_HEAD}recovery: {{learning_rate: 1e-3, warmup: 5E-2}}\n")
    config = load_run_config(path)
    assert isinstance(config, RunConfig)
    assert config.recovery.learning_rate == 0.001 and config.recovery.warmup == 0.05


def test_a_string_that_is_not_a_number_is_still_refused_for_a_float_field(tmp_path):
    from paser.pipelines.run import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(f"{RUN_HEAD}recovery: {{learning_rate: fast}}\n")
    with pytest.raises(ConfigError, match="recovery.learning_rate"):
        load_run_config(path)
