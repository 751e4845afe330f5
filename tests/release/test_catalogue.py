"""The service catalogue: the default file, defaults, and bad content named by field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from errors import InvalidInputError
from tasks.release.catalogue import DEFAULT_CATALOGUE, load_catalogue, parse_catalogue, substitute


def minimal(**overrides):
    data = {
        "environments": {
            "staging": {
                "namespace": "veza-staging",
                "kubernetes_block": "k",
                "prometheus_block": "p",
                "vault_block": "v",
            }
        },
        "services": {
            "veza-web": {"image_repository": "veza/web", "port": 80},
            "veza-backend-api": {"image_repository": "veza/backend-api", "port": 8080},
        },
    }
    data.update(overrides)
    return data


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_default_catalogue_has_the_four_services_and_both_environments():
    catalogue = load_catalogue(DEFAULT_CATALOGUE)
    assert catalogue.switch_order == [
        "veza-backend-api",
        "veza-chat-server",
        "veza-stream-server",
        "veza-web",
    ]
    assert catalogue.environment("staging").namespace == "veza-staging"
    production = catalogue.environment("production")
    assert production.namespace == "veza-production"
    assert production.strategy == "blue-green"
    assert production.staging_environment == "staging"
    ports = {name: s.port for name, s in catalogue.services.items()}
    assert ports == {
        "veza-backend-api": 8080,
        "veza-chat-server": 8081,
        "veza-stream-server": 8082,
        "veza-web": 80,
    }
    backend = catalogue.services["veza-backend-api"]
    assert backend.analysis.success_rate_min == 0.99
    assert backend.analysis.p99_max_ms == 500
    assert backend.image("1.2.3") == "veza/backend-api:1.2.3"
    assert backend.build.push is not None and backend.build.inspect is not None


def test_names_default_to_the_service_name(tmp_path):
    catalogue = load_catalogue(write(tmp_path, minimal()))
    web = catalogue.services["veza-web"]
    assert (web.deployment_base, web.service_name, web.container) == ("veza-web",) * 3
    assert web.deployment_name("green") == "veza-web-green"
    assert web.vault_path_for("staging") == "veza/staging/veza-web"
    # Without switch_order, the order of the file.
    assert catalogue.switch_order == ["veza-web", "veza-backend-api"]
    assert [s.name for s in catalogue.select(["veza-backend-api", "veza-web"])] == [
        "veza-web",
        "veza-backend-api",
    ]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["services"]["veza-web"].update(port=70000), "services.veza-web.port"),
        (lambda d: d["services"]["veza-web"].update(colour="blue"), "services.veza-web.colour"),
        (
            lambda d: d["services"]["veza-web"].update(build={"push": ["docker", "push", "{img}"]}),
            "services.veza-web.build.push",
        ),
        (
            lambda d: d["services"]["veza-web"].update(build={"test": []}),
            "services.veza-web.build.test",
        ),
        (
            lambda d: d["environments"]["staging"].update(namespace="Veza_Staging"),
            "environments.staging.namespace",
        ),
        (
            lambda d: d["environments"]["staging"].pop("vault_block"),
            "environments.staging.vault_block",
        ),
        (
            lambda d: d["services"]["veza-web"].update(smoke_paths=["health"]),
            "services.veza-web.smoke_paths",
        ),
        (
            lambda d: (
                d["services"]["veza-web"]["analysis"].update(success_rate_min=1.5)
                if "analysis" in d["services"]["veza-web"]
                else d["services"]["veza-web"].update(analysis={"success_rate_min": 1.5})
            ),
            "services.veza-web.analysis.success_rate_min",
        ),
    ],
)
def test_bad_fields_are_named(tmp_path, mutate, field):
    data = minimal()
    mutate(data)
    with pytest.raises(InvalidInputError) as raised:
        load_catalogue(write(tmp_path, data))
    assert field in raised.value.field
    assert raised.value.fix


def test_switch_order_must_name_every_service_once(tmp_path):
    with pytest.raises(InvalidInputError, match="switch_order"):
        load_catalogue(write(tmp_path, minimal(switch_order=["veza-web", "veza-nope"])))
    with pytest.raises(InvalidInputError, match="missing"):
        load_catalogue(write(tmp_path, minimal(switch_order=["veza-web"])))


def test_missing_file_and_bad_yaml_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_catalogue(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        load_catalogue(bad)
    with pytest.raises(InvalidInputError, match="not a mapping"):
        parse_catalogue(["a", "list"])


def test_unknown_environment_and_service_are_refused(tmp_path):
    catalogue = load_catalogue(write(tmp_path, minimal()))
    with pytest.raises(InvalidInputError) as raised:
        catalogue.environment("prod")
    assert raised.value.field == "environment"
    with pytest.raises(InvalidInputError) as raised:
        catalogue.select(["veza-web", "veza-chat"])
    assert raised.value.field == "services"
    assert "veza-chat" in raised.value.problem


def test_substitution_is_per_argv_item_and_never_splits():
    argv = ["docker", "build", "-t", "{image}", "--label", "svc={service} v={version}", "{other}"]
    out = substitute(argv, {"image": "veza/web:1.0", "service": "a b;rm -rf /", "version": "1"})
    assert out == [
        "docker",
        "build",
        "-t",
        "veza/web:1.0",
        "--label",
        "svc=a b;rm -rf / v=1",
        "{other}",
    ]
    assert len(out) == len(argv)


# --- analysis metrics (PromQL templates) ---------------------------------------------------

ERRORS_5XX = 'sum(rate(http_requests_total{{selector},status=~"5.."}[{window}]))'


def with_metrics(*metrics):
    data = minimal()
    data["services"]["veza-web"]["analysis"] = {"metrics": list(metrics)}
    return data


def test_metrics_default_to_the_guide_two_and_custom_ones_render():
    from tasks.release.analysis_config import render

    plain = parse_catalogue(minimal()).services["veza-web"].analysis
    assert plain.metrics == [] and plain.success_rate_min == 0.99 and plain.p99_max_ms == 500
    spec = parse_catalogue(with_metrics(
        {"name": "errors-5xx", "query": ERRORS_5XX, "max": 0.5})).services["veza-web"]
    (metric,) = spec.analysis.metrics
    assert (metric.name, metric.max, metric.min, metric.threshold()) == (
        "errors-5xx", 0.5, None, "<= 0.5")
    promql = render(metric.query, namespace="prod", app="veza-web", track="canary", window_s=10,
                    colour_label="colour")
    assert promql == ('sum(rate(http_requests_total{namespace="prod",app="veza-web",'
                      'colour="canary",status=~"5.."}[10s]))')
    assert render("up{namespace=\"{namespace}\",app=\"{app}\",track=\"{track}\"}", namespace="n",
                  app="a", track="t", window_s=5) == 'up{namespace="n",app="a",track="t"}'


@pytest.mark.parametrize(("metric", "field", "problem"), [
    ({"name": "m", "query": "sum(rate(x{{selectr}}[{window}]))", "max": 1},
     "analysis.metrics.0.query", "unknown placeholder {selectr}"),
    ({"name": "m", "query": "sum(rate(x{{selector}[{window}]))", "max": 1},
     "analysis.metrics.0.query", "unbalanced ')' at character 31 while '{' from character 10"),
    ({"name": "m", "query": "sum(rate(x{{selector}}[{window}])", "max": 1},
     "analysis.metrics.0.query", "unclosed '('"),
    ({"name": "m", "query": "  ", "max": 1}, "analysis.metrics.0.query", "an empty query"),
    ({"name": "m", "query": "up", "min": 1, "max": 2}, "analysis.metrics.0",
     "both min and max; set exactly one"),
    ({"name": "m", "query": "up"}, "analysis.metrics.0", "neither min nor max"),
    ({"name": "M x", "query": "up", "max": 1}, "analysis.metrics.0.name", "pattern"),
    ({"name": "success-rate", "query": "up", "max": 1}, "analysis.metrics",
     "built-in metric (its threshold is success_rate_min)"),
    ({"name": "m", "query": "up", "max": 1, "maximum": 2}, "analysis.metrics.0.maximum",
     "Extra inputs"),
])
def test_a_malformed_metric_is_refused_at_load_naming_the_field(tmp_path, metric, field,
                                                                problem):
    with pytest.raises(InvalidInputError) as refused:
        load_catalogue(write(tmp_path, with_metrics(metric)))
    assert refused.value.field.endswith("services.veza-web." + field)
    assert problem in refused.value.problem
    assert refused.value.fix


def test_a_metric_name_used_twice_is_refused_naming_both_entries():
    ok = {"name": "errors-5xx", "query": ERRORS_5XX, "max": 0.5}
    with pytest.raises(InvalidInputError) as refused:
        parse_catalogue(with_metrics(ok, {"name": "rps", "query": "up", "min": 1}, ok))
    assert refused.value.field.endswith("services.veza-web.analysis.metrics")
    assert "metrics.2.name 'errors-5xx' is already the name of metrics.0" in (
        refused.value.problem)


def test_the_builtin_templates_render_the_guide_queries():
    from tasks.release.analysis_config import P99_TEMPLATE, SUCCESS_RATE_TEMPLATE, check_template

    assert check_template(SUCCESS_RATE_TEMPLATE) and check_template(P99_TEMPLATE)
    assert check_template('x{code=~"5[0-9]{2}"}')  # PromQL's own braces are not placeholders
