"""Long work with progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from backend.api.deps import JobsDep
from backend.api.schemas import JobList, JobOut, errors
from backend.errors import NotFound
from backend.service import render

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=JobList, summary="Recent jobs, newest first")
async def list_jobs(jobs: JobsDep) -> Response:
    return render.json_object_view({"jobs": [j.as_dict() for j in jobs.list()]}).as_response()


@router.get(
    "/{job_id}", response_model=JobOut, responses=errors(404, 422), summary="One job's status and progress"
)
async def get_job(
    jobs: JobsDep, job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Job id")]
) -> Response:
    """``status``: queued | running | succeeded | failed; ``progress`` 0..1; ``result_url`` once it succeeded;
    ``error`` ``{code, message}`` when it failed."""
    record = await jobs.record(job_id)  # this process's, or another's through the shared store
    if record is None:
        raise NotFound(f"no job with id {job_id}; jobs are kept for the last {jobs.history} only")
    return render.json_object_view(record).as_response()
