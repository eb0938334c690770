"""JSON Schema files of the log types, for producers (docs/schemas/)."""

from __future__ import annotations

import json
from pathlib import Path

from sentencify.schemas.events import EVENT_TYPES


def export_json_schemas(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for et in EVENT_TYPES:
        schema = et.model.model_json_schema()
        schema["title"] = f"{et.code} {et.name}"
        schema["description"] = (
            f"{(et.model.__doc__ or '').strip()} Topic: TOPIC_PREFIX + '{et.name}'. "
            f"MongoDB _id = {et.key_field}. Unknown extra fields are kept."
        )
        path = out / f"{et.code}_{et.name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
