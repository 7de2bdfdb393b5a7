"""Schemathesis hooks of the contract fuzz test (the CLI loads them through ``SCHEMATHESIS_HOOKS``).

- ``positive_data_accepted_unless_the_image_is_unreadable`` replaces the built-in
  ``positive_data_acceptance``. JSON Schema can say that a field is base64 (or a binary file),
  not that its bytes decode to an image with an object in it: the fuzzer's schema-valid images
  are random bytes. The document says so in each image field's description, and the service
  answers 422 naming that field. This check accepts exactly that answer, a 422 whose ``field``
  is the field that carried an image in this request, and applies the built-in check to every
  other answer.
- ``after_call`` waits, after each accepted job (``POST /jobs`` 202), until that job has finished.
  The fuzzer submits jobs faster than the CPU graph runs them; unpaced, they would pile up
  behind each other until ``/generate`` answers 503 for want of capacity, which is what the
  service should do when full, not a contract failure. Paced, each request is judged alone.
"""

import time
from typing import Any

import httpx
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gen3d.service.api import looks_like_base64_image

#: The longest wait for one job: it runs alone on the tiny CPU graph, in about a second.
JOB_WAIT_S = 120.0


def image_field(case: Any) -> str | None:
    """The request field that carries an image in ``case``, if one does."""
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.path == "/generate/":
        prompt = body.get("prompt")
        return "prompt" if isinstance(prompt, str) and looks_like_base64_image(prompt) else None
    if case.media_type == "multipart/form-data":
        return "prompt_image_file"
    return "image" if isinstance(body.get("image"), str) else None


@schemathesis.check
def positive_data_accepted_unless_the_image_is_unreadable(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance``, except a 422 naming the field that carried an image (see the module)."""
    field = image_field(case)
    if response.status_code == 422 and field is not None and response.json().get("field") == field:
        return None
    return positive_data_acceptance(ctx, response, case)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """After ``POST /jobs`` answered 202, wait (bounded) until the job is done or failed."""
    if case.operation.path != "/jobs" or case.method.upper() != "POST" or response.status_code != 202:
        return
    url = httpx.URL(response.request.url).join(response.json()["status_url"])
    key = response.request.headers.get("X-API-Key")
    headers = {"X-API-Key": key} if key else {}
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        if httpx.get(url, headers=headers, timeout=30).json()["status"] in ("done", "failed"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"job {url} not finished within {JOB_WAIT_S:g} s")
