"""/api/v1/channels: a team's notification channels and their delivery log; /api/v1/notifications/{id}/chart.png:
a message's chart, for the signed link in it (no login). A few lines per route; the work is in `service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from server.core.errors import ERROR_RESPONSES
from server.deps import CallerDep, SessionDep, SettingsDep
from server.notify import service
from server.notify.delivery import Deliverer
from server.notify.schemas import ChannelCreate, ChannelPublic, ChannelUpdate, DeliveryPublic

router = APIRouter(tags=["notifications"], responses=ERROR_RESPONSES)
public_router = APIRouter(tags=["notifications"])

ChannelId = Annotated[int, Path(ge=1, le=2**62)]
Team = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$",
                                   description="One of your teams; default: your first.")]


def _deliverer(request: Request) -> Deliverer:
    deliverer: Deliverer = request.app.state.notifier
    return deliverer


@router.get("/channels", response_model=list[ChannelPublic])
def read_channels(session: SessionDep, settings: SettingsDep, caller: CallerDep,
                  team: Team = None) -> list[ChannelPublic]:
    """The team's channels (never their URLs or headers: `target_hint` is masked)."""
    return service.list_channels(session, settings=settings, caller=caller, team=team)


@router.post("/channels", status_code=201, response_model=ChannelPublic)
def create_channel(body: ChannelCreate, session: SessionDep, settings: SettingsDep,
                   caller: CallerDep) -> ChannelPublic:
    """A new channel: `url` for webhook and slack (http(s); private addresses only where the server allows
    them), `emails` for email (the server's SMTP settings send them). Secrets are write-only."""
    return service.create(session, settings=settings, caller=caller, body=body)


@router.get("/channels/{channel_id}", response_model=ChannelPublic)
def read_channel(channel_id: ChannelId, session: SessionDep, settings: SettingsDep,
                 caller: CallerDep) -> ChannelPublic:
    return service.to_public(session, settings, [service.get(session, caller=caller, channel_id=channel_id)])[0]


@router.patch("/channels/{channel_id}", response_model=ChannelPublic)
def update_channel(channel_id: ChannelId, body: ChannelUpdate, session: SessionDep, settings: SettingsDep,
                   caller: CallerDep) -> ChannelPublic:
    """Change what is given; a new `url`, `headers` or `signing_secret` replaces the stored one."""
    return service.update(session, settings=settings, caller=caller, channel_id=channel_id, body=body)


@router.delete("/channels/{channel_id}", status_code=204, response_class=Response)
def delete_channel(channel_id: ChannelId, session: SessionDep, caller: CallerDep) -> Response:
    """The channel and its delivery log."""
    service.delete(session, caller=caller, channel_id=channel_id)
    return Response(status_code=204)


@router.post("/channels/{channel_id}/test", response_model=DeliveryPublic)
def test_channel(channel_id: ChannelId, request: Request, session: SessionDep, caller: CallerDep) -> DeliveryPublic:
    """Send a test message now, through the same path as any message; tried once. -> the delivery, with its
    attempt (sent, or failed with the receiver's answer)."""
    return service.send_test(session, caller=caller, deliverer=_deliverer(request), channel_id=channel_id)


@router.get("/channels/{channel_id}/deliveries", response_model=list[DeliveryPublic])
def read_deliveries(channel_id: ChannelId, session: SessionDep, caller: CallerDep,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    before: Annotated[int | None, Query(ge=1, le=2**62, description="Only deliveries older "
                                                        "than this id (the next page).")] = None
                    ) -> list[DeliveryPublic]:
    """The channel's messages, newest first, each with its attempts."""
    return service.deliveries(session, caller=caller, channel_id=channel_id, limit=limit, before=before)


@public_router.get("/notifications/{delivery_id}/chart.png", response_class=Response,
                   responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                                    "description": "The chart of the signal around the message's step."},
                              404: {"description": "No such chart, or a wrong signature."}})
def read_chart(delivery_id: Annotated[int, Path(ge=1, le=2**62)], session: SessionDep, settings: SettingsDep,
               sig: Annotated[str, Query(max_length=128, description="The signature from the message's link.")] = ""
               ) -> Response:
    """A message's chart, for the link in it (Slack fetches it): no login; the signature makes the link
    unguessable, and a wrong one is a 404."""
    png = service.chart_png(session, settings=settings, delivery_id=delivery_id, sig=sig)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})
