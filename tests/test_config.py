"""Settings: one name everywhere, precedence, and errors that point at file:line."""

from __future__ import annotations

import pytest
import yaml

from mlxlab.config import (DeviceConfig, GenerateConfig, TaxonomyConfig, init_config, load_config, overrides_from_args,
                           read_config_file, resolve, save_resolved)
from mlxlab.errors import MlxlabError


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_file_and_overrides_precedence(tmp_path):
    write(tmp_path / "xdg" / "mlxlab" / "config.yaml", "taxonomy:\n  taxonomy: user-tax\n  strict: true\n")
    write(tmp_path / "mlxlab.yaml", "taxonomy:\n  taxonomy: project-tax\n")
    cfg = resolve(TaxonomyConfig, file_config=load_config())
    assert cfg.taxonomy == "project-tax"          # project file beats the user file
    assert cfg.strict is True                       # the user file beats the default
    assert cfg.fetch_documents is True              # the default
    cfg = resolve(TaxonomyConfig, file_config=load_config(), taxonomy="flag-tax", strict=None)
    assert cfg.taxonomy == "flag-tax" and cfg.strict is True  # None means "flag not given"


def test_unknown_key_names_line_and_nearest_key(tmp_path):
    path = write(tmp_path / "mlxlab.yaml", "device:\n  device: cpu\n\ntaxonomy:\n  taxonmy: x\n")
    with pytest.raises(MlxlabError) as err:
        read_config_file(path)
    assert err.value.line == 5 and err.value.column == 3
    assert "unknown key 'taxonmy' in taxonomy (did you mean 'taxonomy'?)" in str(err.value)
    assert str(err.value).startswith(f"{path}:5:3:")


def test_unknown_section_suggests(tmp_path):
    path = write(tmp_path / "mlxlab.yaml", "devices:\n  device: cpu\n")
    with pytest.raises(MlxlabError, match=r"mlxlab.yaml:1:1: unknown section 'devices' \(did you mean 'device'\?\)"):
        read_config_file(path)


def test_wrong_type_points_at_value(tmp_path):
    path = write(tmp_path / "mlxlab.yaml", "taxonomy:\n  strict: maybe\n")
    with pytest.raises(MlxlabError) as err:
        resolve(TaxonomyConfig, file_config=load_config(path))
    assert (err.value.line, err.value.column) == (2, 11)
    assert "strict expects true or false, found 'maybe'" in str(err.value)


def test_invalid_yaml_has_line(tmp_path):
    path = write(tmp_path / "mlxlab.yaml", "taxonomy:\n  strict: [true\n")
    with pytest.raises(MlxlabError) as err:
        read_config_file(path)
    assert err.value.line is not None and "invalid YAML" in str(err.value)


def test_unknown_keyword_override_suggests():
    with pytest.raises(MlxlabError, match="did you mean 'device'"):
        resolve(DeviceConfig, devic="cpu")


def test_init_writes_commented_defaults_and_never_overwrites(tmp_path):
    path = init_config(tmp_path / "mlxlab.yaml")
    text = path.read_text()
    assert "# taxonomy: taxonomy" in text and "--num-iters" in text
    # every section parses and, uncommented, gives back the defaults
    uncommented = "\n".join("  " + line[4:] if line.startswith("  # ") else line for line in text.splitlines())
    data = yaml.safe_load(uncommented)
    assert set(data) >= {"device", "model", "taxonomy"}
    assert resolve(TaxonomyConfig, file_config={"taxonomy": {}}) == TaxonomyConfig(**data["taxonomy"])
    before = path.read_text()
    with pytest.raises(MlxlabError, match="already exists"):
        init_config(path)
    assert path.read_text() == before
    init_config(path, force=True)


def test_save_resolved_round_trips(tmp_path):
    cfg = resolve(TaxonomyConfig, strict=True)
    out = save_resolved(tmp_path / "run" / "config.yaml", cfg, DeviceConfig())
    data = yaml.safe_load(out.read_text())
    assert data["taxonomy"]["strict"] is True and data["device"]["device"] == "auto"
    again = resolve(TaxonomyConfig, file_config=read_config_file(out))
    assert again == cfg


def test_teacher_url_takes_several_urls_as_text_yaml_list_or_flag(tmp_path):
    from mlxlab.cli import build_parser

    urls = ["http://a:8080", "http://b:8080/v1"]
    assert resolve(GenerateConfig).teacher_url is None
    assert resolve(GenerateConfig, teacher_url="http://a:8080").teacher_url == ["http://a:8080"]
    assert resolve(GenerateConfig, teacher_url=" http://a:8080, http://b:8080/v1,").teacher_url == urls
    assert resolve(GenerateConfig, teacher_url=urls).teacher_url == urls
    as_list = write(tmp_path / "list.yaml", "generate:\n  teacher_url:\n    - http://a:8080\n    - http://b:8080/v1\n")
    as_text = write(tmp_path / "text.yaml", "generate:\n  teacher_url: http://a:8080,http://b:8080/v1\n")
    for path in (as_list, as_text):
        assert resolve(GenerateConfig, file_config=load_config(path)).teacher_url == urls
    args = build_parser().parse_args(["generate", "--teacher-url", "http://a:8080,http://b:8080/v1"])
    cfg = resolve(GenerateConfig, file_config=load_config(as_text), **overrides_from_args(args, GenerateConfig))
    assert cfg.teacher_url == urls
    saved = save_resolved(tmp_path / "run" / "config.yaml", cfg)      # and back from the saved settings
    assert resolve(GenerateConfig, file_config=read_config_file(saved)).teacher_url == urls
    bad = write(tmp_path / "bad.yaml", "generate:\n  teacher_url: {a: 1}\n")
    with pytest.raises(MlxlabError, match="teacher_url expects a list"):
        resolve(GenerateConfig, file_config=load_config(bad))
