"""Build Superset import bundles from the YAML templates in `superset/dashboard/`.

The templates hold what a person decides (names, fixed UUIDs, views, metrics, chart settings,
layout); this module fills in what Superset's import format needs besides, so the files stay
readable: `${VAR}` settings, column and metric defaults, dataset references by view name, each
chart's saved query context, and the dashboard's position tree from its `layout` rows.
No network, no Superset: the output is plain zip files. `superset import-dashboards` takes them too:
with the database password inside (`with_passwords`) for a first import, masked for a re-import.
"""

from __future__ import annotations

import copy
import io
import json
import re
import string
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from sentencify import contract
from sentencify.errors import DataError
from sentencify.settings import PROJECT_ROOT, Settings

TEMPLATE_DIR = PROJECT_ROOT / "superset" / "dashboard"
TOP_FOLDER = "sentencify_dashboard"
SCHEMA = contract.PG_SCHEMA
PASSWORD_MASK = "XXXXXXXXXX"  # what Superset expects in place of a password it is sent apart
# Superset's metadata.yaml type per kind of bundle (each import endpoint checks it).
KINDS = {"database": "Database", "dataset": "SqlaTable", "dashboard": "Dashboard"}


class BundleError(DataError, ValueError):
    """A template is inconsistent (unknown view, chart or variable); the message names the file."""


@dataclass
class Bundle:
    databases: dict[str, dict] = field(default_factory=dict)  # bundle path -> config
    datasets: dict[str, dict] = field(default_factory=dict)
    charts: dict[str, dict] = field(default_factory=dict)
    dashboards: dict[str, dict] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)  # database file stem -> password

    @property
    def dashboard(self) -> dict:
        return next(iter(self.dashboards.values()))

    def files(self, kind: str) -> dict[str, dict]:
        """The configs a `kind` import needs: each kind carries what it depends on."""
        out = dict(self.databases)
        if kind in ("dataset", "dashboard"):
            out.update(self.datasets)
        if kind == "dashboard":
            out.update(self.charts)
            out.update(self.dashboards)
        return out

    def zip_bytes(self, kind: str, *, with_passwords: bool = False) -> bytes:
        """The import zip of `kind`. Passwords stay masked (the REST import takes them apart, and
        a re-import keeps the one Superset holds) unless `with_passwords`: then the database URI
        carries its password, so `superset import-dashboards` can create the database offline,
        and the zip is a secret."""
        if kind not in KINDS:
            raise BundleError(f"unknown bundle kind {kind!r}; choose from {sorted(KINDS)}")
        metadata = {"version": "1.0.0", "type": KINDS[kind], "timestamp": datetime.now(UTC).isoformat()}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{TOP_FOLDER}/metadata.yaml", yaml.safe_dump(metadata, sort_keys=False))
            for path, config in sorted(self.files(kind).items()):
                password = self.passwords.get(Path(path).stem) if path in self.databases else None
                if with_passwords and password is not None:
                    config = {**config, "sqlalchemy_uri": unmask_password(config["sqlalchemy_uri"], password)}
                zf.writestr(f"{TOP_FOLDER}/{path}", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        return buf.getvalue()


def template_vars(settings: Settings) -> dict[str, str]:
    return {
        "ANALYTICS_READER_URI": settings.analytics_reader_uri,
        "AIRFLOW_URL": settings.airflow_url,
    }


def _substitute(value, variables: dict[str, str], where: str):
    if isinstance(value, str):
        try:
            return string.Template(value).substitute(variables)
        except (KeyError, ValueError) as exc:
            raise BundleError(f"{where}: unknown or malformed ${{...}} variable {exc}; known: {sorted(variables)}") from None
    if isinstance(value, dict):
        return {k: _substitute(v, variables, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    return value


def _load(directory: Path, variables: dict[str, str]) -> dict[str, dict]:
    out = {}
    for path in sorted(directory.rglob("*.yaml")):
        rel = path.relative_to(directory.parent).as_posix()
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise BundleError(f"{path}: not valid YAML: {exc}") from None
        out[rel] = _substitute(config, variables, str(path))
    return out


def mask_password(uri: str) -> tuple[str, str | None]:
    """The URI with its password replaced by Superset's mask, and the password (or None)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri, None
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{PASSWORD_MASK}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), urllib.parse.unquote(parts.password)


def unmask_password(uri: str, password: str) -> str:
    """`mask_password` undone: the URI with `password` in place of the mask."""
    return uri.replace(f":{PASSWORD_MASK}@", f":{urllib.parse.quote(password, safe='')}@", 1)


COLUMN_DEFAULTS = {
    "is_dttm": False,
    "is_active": True,
    "filterable": True,
    "groupby": True,
    "expression": None,
    "description": None,
    "verbose_name": None,
    "python_date_format": None,
    "advanced_data_type": None,
    "extra": None,
}
METRIC_DEFAULTS = {
    "metric_type": None,
    "description": None,
    "verbose_name": None,
    "d3format": None,
    "warning_text": None,
    "extra": None,
    "currency": None,
}
DATASET_DEFAULTS = {
    "schema": SCHEMA,
    "catalog": None,
    "main_dttm_col": None,
    "description": None,
    "sql": None,
    "params": None,
    "template_params": None,
    "filter_select_enabled": True,
    "fetch_values_predicate": None,
    "extra": None,
    "offset": 0,
    "cache_timeout": None,
    "default_endpoint": None,
    "normalize_columns": False,
    "always_filter_main_dttm": False,
    "is_managed_externally": True,
    "version": "1.0.0",
}
CHART_DEFAULTS = {
    "description": None,
    "certified_by": None,
    "certification_details": None,
    "cache_timeout": None,
    "is_managed_externally": True,
    "version": "1.0.0",
}


def _complete_dataset(config: dict, database_uuid: str) -> dict:
    out = {**DATASET_DEFAULTS, **config, "database_uuid": database_uuid}
    out["columns"] = [{**COLUMN_DEFAULTS, **c} for c in config.get("columns", [])]
    out["metrics"] = [{**METRIC_DEFAULTS, **m} for m in config.get("metrics") or []]
    return out


def query_context(params: dict, temporal_columns: set[str]) -> dict:
    """The query a chart's data API call runs: rows as the view has them, before any chart-side
    post-processing (cumulative sums, pivots), so its numbers can be checked against the views."""
    if params.get("query_mode") == "raw":
        orderby = [json.loads(o) for o in params.get("order_by_cols") or []]  # Superset keeps them as JSON strings
        query = {
            "columns": list(params["all_columns"]),
            "metrics": [],
            "orderby": orderby,
            "row_limit": params.get("row_limit", 1000),
        }
    else:
        metrics = list(params.get("metrics") or [params["metric"]])
        x_axis = params.get("x_axis")
        columns: list = []
        if x_axis in temporal_columns and params.get("time_grain_sqla"):
            columns.append(
                {
                    "timeGrain": params["time_grain_sqla"],
                    "columnType": "BASE_AXIS",
                    "sqlExpression": x_axis,
                    "label": x_axis,
                    "expressionType": "SQL",
                }
            )
        elif x_axis:
            columns.append(x_axis)
        columns += list(params.get("groupby") or [])
        query = {
            "columns": columns,
            "metrics": metrics,
            "orderby": [[x_axis, True]] if x_axis else [[metrics[0], False]],
            "row_limit": params.get("row_limit", 10000),
        }
    query.update(
        {
            "filters": [],
            "extras": {"having": "", "where": ""},
            "applied_time_extras": {},
            "annotation_layers": [],
            "series_limit": 0,
            "url_params": {},
            "custom_params": {},
            "custom_form_data": {},
        }
    )
    return {
        "datasource": {"id": 0, "type": "table"},
        "force": False,
        "queries": [query],
        "form_data": params,
        "result_format": "json",
        "result_type": "full",
    }


def _complete_chart(path: str, config: dict, datasets_by_view: dict[str, dict]) -> dict:
    view = config.get("dataset")
    if view not in datasets_by_view:
        raise BundleError(f"{path}: dataset {view!r} is not one of {sorted(datasets_by_view)}")
    dataset = datasets_by_view[view]
    params = {
        "viz_type": config["viz_type"],
        "adhoc_filters": [],
        "extra_form_data": {},
        "annotation_layers": [],
        "color_scheme": "supersetColors",
        **config.get("params", {}),
    }
    names = {c["column_name"] for c in dataset["columns"]} | {m["metric_name"] for m in dataset["metrics"]}
    used = [
        params.get("x_axis"),
        params.get("metric"),
        *(params.get("metrics") or []),
        *(params.get("groupby") or []),
        *(params.get("all_columns") or []),
    ]
    unknown = [u for u in used if u and u not in names]
    if unknown:
        raise BundleError(f"{path}: {unknown} are neither columns nor metrics of {view}")
    temporal = {c["column_name"] for c in dataset["columns"] if c["is_dttm"]}
    out = {**CHART_DEFAULTS, **{k: v for k, v in config.items() if k not in ("dataset", "params")}}
    out.update({"dataset_uuid": dataset["uuid"], "params": params, "query_context": json.dumps(query_context(params, temporal))})
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text)


def position(layout: list[dict], charts_by_key: dict[str, dict], markdown: dict[str, str], title: str) -> dict:
    """Superset's position tree (ROOT > GRID > ROW > CHART/MARKDOWN) for rows of items.

    Each chart gets a placeholder id (1, 2, ... in layout order): the import maps it, by the
    chart's UUID, to the chart's id in Superset, also where native filters name charts."""
    pos: dict = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"id": "ROOT_ID", "type": "ROOT", "children": ["GRID_ID"]},
        "GRID_ID": {"id": "GRID_ID", "type": "GRID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"id": "HEADER_ID", "type": "HEADER", "meta": {"text": title}},
    }
    chart_ids = placeholder_ids(layout)
    for n, row in enumerate(layout, 1):
        row_id = f"ROW-{n}"
        pos["GRID_ID"]["children"].append(row_id)
        pos[row_id] = {
            "id": row_id,
            "type": "ROW",
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        if sum(item["width"] for item in row["items"]) > 12:
            raise BundleError(f"layout row {n} is wider than 12 columns")
        for item in row["items"]:
            parents = ["ROOT_ID", "GRID_ID", row_id]
            if "chart" in item:
                chart = charts_by_key.get(item["chart"])
                if chart is None:
                    raise BundleError(f"layout row {n}: no chart {item['chart']!r} in charts/ ({sorted(charts_by_key)})")
                node_id = f"CHART-{_slug(item['chart'])}"
                meta = {
                    "chartId": chart_ids[item["chart"]],
                    "uuid": chart["uuid"],
                    "sliceName": chart["slice_name"],
                    "width": item["width"],
                    "height": item.get("height", row["height"]),
                }
                node_type = "CHART"
            else:
                if item["markdown"] not in markdown:
                    raise BundleError(f"layout row {n}: no markdown {item['markdown']!r}")
                node_id = f"MARKDOWN-{_slug(item['markdown'])}"
                meta = {"code": markdown[item["markdown"]], "width": item["width"], "height": item.get("height", row["height"])}
                node_type = "MARKDOWN"
            pos[row_id]["children"].append(node_id)
            pos[node_id] = {"id": node_id, "type": node_type, "children": [], "parents": parents, "meta": meta}
    return pos


def placeholder_ids(layout: list[dict]) -> dict[str, int]:
    keys = [item["chart"] for row in layout for item in row["items"] if "chart" in item]
    return {key: n for n, key in enumerate(keys, 1)}


def native_filters(
    filters: list[dict], layout: list[dict], datasets_by_view: dict[str, dict], charts: dict[str, dict], path: str
) -> list[dict]:
    """`filters:` of the dashboard YAML -> Superset's native_filter_configuration.

    Each filter names the charts it applies to; the others are excluded from its scope (by
    placeholder id). A select filter takes its values from one dataset's column."""
    ids = placeholder_ids(layout)
    datasets_by_uuid = {d["uuid"]: d for d in datasets_by_view.values()}
    out = []
    for f in filters:
        unknown = [c for c in f["charts"] if c not in ids]
        if unknown:
            raise BundleError(f"{path}: filter {f['name']!r} names charts not in the layout: {unknown}")
        scope = {"rootPath": ["ROOT_ID"], "excluded": sorted(ids[c] for c in ids if c not in f["charts"])}
        config = {
            "id": f["id"],
            "name": f["name"],
            "description": f.get("description", ""),
            "type": "NATIVE_FILTER",
            "scope": scope,
            "cascadeParentIds": [],
            "chartsInScope": [],
            "tabsInScope": [],
            "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
        }
        if f["type"] == "time":
            config.update(filterType="filter_time", targets=[{}], controlValues={})
        elif f["type"] == "select":
            dataset = datasets_by_view.get(f["dataset"])
            if dataset is None or f["column"] not in {c["column_name"] for c in dataset["columns"]}:
                raise BundleError(f"{path}: filter {f['name']!r}: no column {f['column']!r} in dataset {f['dataset']!r}")
            for key in f["charts"]:  # a chart in scope must have the column, or its query fails
                chart_dataset = datasets_by_uuid[charts[key]["dataset_uuid"]]
                if f["column"] not in {c["column_name"] for c in chart_dataset["columns"]}:
                    view = chart_dataset["table_name"]
                    raise BundleError(f"{path}: filter {f['name']!r} applies to {key}, whose {view} has no {f['column']!r}")
            config.update(
                filterType="filter_select",
                targets=[{"datasetUuid": dataset["uuid"], "column": {"name": f["column"]}}],
                controlValues={
                    "multiSelect": True,
                    "enableEmptyFilter": False,
                    "defaultToFirstItem": False,
                    "inverseSelection": False,
                    "searchAllOptions": False,
                    "sortAscending": True,
                },
            )
        else:
            raise BundleError(f"{path}: filter {f['name']!r} has unknown type {f['type']!r} (time or select)")
        out.append(config)
    return out


def build(settings: Settings, template_dir: Path = TEMPLATE_DIR) -> Bundle:
    variables = template_vars(settings)
    databases = _load(template_dir / "databases", variables)
    if len(databases) != 1:
        raise BundleError(f"{template_dir}/databases must hold exactly one database, found {sorted(databases)}")
    bundle = Bundle()
    ((db_path, db),) = databases.items()
    db = {"is_managed_externally": True, **db}
    db["sqlalchemy_uri"], password = mask_password(db["sqlalchemy_uri"])
    if password is not None:
        bundle.passwords[Path(db_path).stem] = password
    bundle.databases[db_path] = db

    datasets_by_view = {}
    for path, config in _load(template_dir / "datasets", variables).items():
        dataset = _complete_dataset(config, db["uuid"])
        bundle.datasets[path] = dataset
        datasets_by_view[dataset["table_name"]] = dataset

    charts_by_key = {}
    for path, config in _load(template_dir / "charts", variables).items():
        chart = _complete_chart(path, config, datasets_by_view)
        bundle.charts[path] = chart
        charts_by_key[Path(path).stem] = chart

    dashboards = _load(template_dir / "dashboards", variables)
    if len(dashboards) != 1:
        raise BundleError(f"{template_dir}/dashboards must hold exactly one dashboard, found {sorted(dashboards)}")
    ((dash_path, dash),) = dashboards.items()
    dash = copy.deepcopy(dash)
    layout, markdown, filters = dash.pop("layout"), dash.pop("markdown", {}), dash.pop("filters", [])
    dash["position"] = position(layout, charts_by_key, markdown, dash["dashboard_title"])
    dash.setdefault("metadata", {})["native_filter_configuration"] = native_filters(
        filters, layout, datasets_by_view, charts_by_key, dash_path
    )
    placed = {item["chart"] for row in layout for item in row["items"] if "chart" in item}
    if set(charts_by_key) - placed:
        raise BundleError(f"{dash_path}: charts not placed in the layout: {sorted(set(charts_by_key) - placed)}")
    dash.setdefault("version", "1.0.0")
    dash.setdefault("is_managed_externally", True)
    dash.setdefault("certified_by", None)
    dash.setdefault("certification_details", None)
    bundle.dashboards[dash_path] = dash
    return bundle
