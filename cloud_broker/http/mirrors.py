"""Mirror admin endpoints: list with lag, add, remove. A thin adapter on MirrorManager.

    GET    /v1/mirrors          (read)   200 {"mirrors": [status...]}
    POST   /v1/mirrors          (admin)  JSON {"name", "topic", "target", ...} as in a
                                         [mirrors.<name>] table -> 201 status
                                         400 bad definition (field named), 409 name taken
    DELETE /v1/mirrors/{name}   (admin)  204; 404 unknown, 409 defined in cloud.toml

A token sees and manages only the mirrors of topics in its ``topics`` scope (403 naming
the topic otherwise; the list leaves the others out).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import ConfigError
from ..errors import Problem
from ..mirrors import MirrorExists
from .errors import endpoint
from .params import authorize, check_topic, json_body
from .services import MirrorService


@endpoint
async def list_mirrors(request: Request, service: MirrorService) -> Response:
    principal = authorize(service, request, "read")
    return JSONResponse({"mirrors": [m for m in service.mirrors.status()
                                     if principal.may_topic(str(m.get("topic")))]})


@endpoint
async def add_mirror(request: Request, service: MirrorService) -> Response:
    principal = authorize(service, request, "admin")
    doc = await json_body(request)
    if isinstance(doc.get("topic"), str):
        check_topic(principal, doc["topic"])
    manager = service.mirrors
    try:
        cfg = await manager.add(doc)
    except ConfigError as exc:
        raise Problem(400, str(exc), exc.key.rsplit(".", 1)[-1] or "name") from exc
    except MirrorExists as exc:
        raise Problem(409, str(exc), "name") from exc
    return JSONResponse(manager.runners[cfg.name].status(), status_code=201)


@endpoint
async def delete_mirror(request: Request, service: MirrorService) -> Response:
    principal = authorize(service, request, "admin")
    name = request.path_params["name"]
    manager = service.mirrors
    if name in manager.configs:
        check_topic(principal, manager.configs[name].topic)
    if name in manager.configs and name not in manager.dynamic:
        raise Problem(409, f"mirror {name!r} is defined in cloud.toml; remove it there", "name")
    if not await manager.remove(name):
        raise Problem(404, f"no mirror {name!r}", "name")
    return Response(status_code=204)
