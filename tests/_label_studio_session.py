"""One pre-labelling session with a real Label Studio through its SDK, run by
``tests/test_label_studio_real.py`` with the Python of Label Studio's own venv
(``tools/label_studio_env.sh``), never the project's: it imports only label-studio-sdk and httpx.

    python _label_studio_session.py LS_URL TOKEN BACKEND_URL IMAGE LABEL [LABEL ...]

Creates a project whose config is a ``RectangleLabels`` over the given labels, uploads IMAGE as
its task, connects BACKEND_URL as the project's ML backend (Label Studio calls its ``/health`` and
``/setup``), runs the Data Manager's "Retrieve predictions" action (Label Studio calls
``/predict`` and stores the answer) and prints, as one JSON object on stdout, what Label Studio
then holds: the task, the ML backend and the task's predictions. Any failure is a non-zero exit
with the SDK's error on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from label_studio_sdk import LabelStudio

TIMEOUT = 120.0  # seconds per request: retrieving predictions waits for the backend's /predict


def label_config(labels: list[str]) -> str:
    from xml.sax.saxutils import quoteattr

    options = "".join(f"<Label value={quoteattr(name)}/>" for name in labels)
    return (f'<View><Image name="image" value="$image"/>'
            f'<RectangleLabels name="label" toName="image">{options}</RectangleLabels></View>')


def main(url: str, token: str, backend: str, image: str, labels: list[str]) -> dict:
    ls = LabelStudio(base_url=url, api_key=token, timeout=TIMEOUT)
    project = ls.projects.create(title="detect serve pre-labels", label_config=label_config(labels))
    # a file upload is a multipart POST, which the generated SDK does not wrap: the same REST route
    with open(image, "rb") as f:
        r = httpx.post(f"{url}/api/projects/{project.id}/import", params={"return_task_ids": "true"},
                       headers={"Authorization": f"Token {token}"}, files={"file": (Path(image).name, f, "image/jpeg")},
                       timeout=TIMEOUT)
    r.raise_for_status()
    ids = r.json().get("task_ids") or []
    if len(ids) != 1:
        raise SystemExit(f"expected the one uploaded task, Label Studio answered {r.text}")
    task = ls.tasks.get(ids[0])
    ml = ls.ml.create(project=project.id, url=backend, title="detect serve", is_interactive=False)
    ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                      selected_items={"all": False, "included": [task.id]})
    predictions = ls.predictions.list(task=task.id)
    return {
        "project": {"id": project.id, "label_config": ls.projects.get(project.id).label_config},
        "task": {"id": task.id, "data": task.data},
        "ml_backend": ls.ml.get(ml.id).model_dump(mode="json"),
        "predictions": [p.model_dump(mode="json") for p in predictions],
    }


if __name__ == "__main__":
    if len(sys.argv) < 6:
        raise SystemExit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])))
