"""Requests that find the ownership answer lapsed at the same moment share one question to the registries."""

from __future__ import annotations

import asyncio

import pytest
from test_guard_decisions import claims

from ncp.errors import Forbidden
from ncp.gateway.guard import Guard
from ncp.security.tokens import PatientRef


class SlowRegistry:
    """Answers after a short delay, as ITI-67 over the network would, counting the questions."""

    def __init__(self, owned: bool) -> None:
        self.owned, self.asked = owned, 0

    async def owns(self, *_: object) -> bool:
        self.asked += 1
        await asyncio.sleep(0.05)
        return self.owned


def test_sixteen_image_requests_at_once_ask_the_registries_once() -> None:
    guard, registry = Guard("FR", None), SlowRegistry(owned=True)

    async def viewer() -> None:
        await asyncio.gather(
            *(guard.require_ownership(claims(3600), "1.2.3", registry.owns) for _ in range(16))
        )

    asyncio.run(viewer())

    assert registry.asked == 1


def test_a_refusal_reaches_every_request_that_waited_for_it() -> None:
    guard, registry = Guard("FR", None), SlowRegistry(owned=False)

    async def viewer() -> list[BaseException | None]:
        asks = (guard.require_ownership(claims(3600), "1.2.3", registry.owns) for _ in range(4))
        return await asyncio.gather(*asks, return_exceptions=True)

    answers = asyncio.run(viewer())

    assert registry.asked == 1
    assert all(isinstance(a, Forbidden) for a in answers)


def test_another_study_or_patient_is_asked_on_its_own() -> None:
    guard, registry = Guard("FR", None), SlowRegistry(owned=True)
    other = claims(3600, patient=PatientRef("2.999.250.2", "FR-2"))

    async def viewer() -> None:
        await asyncio.gather(
            guard.require_ownership(claims(3600), "1.2.3", registry.owns),
            guard.require_ownership(claims(3600), "1.2.4", registry.owns),
            guard.require_ownership(other, "1.2.3", registry.owns),
        )

    asyncio.run(viewer())

    assert registry.asked == 3


def test_a_waiter_that_gives_up_does_not_cancel_the_others_answer() -> None:
    guard, registry = Guard("FR", None), SlowRegistry(owned=True)

    async def viewer() -> None:
        first = asyncio.ensure_future(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
        second = asyncio.ensure_future(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
        await asyncio.sleep(0.01)
        first.cancel()
        await second  # answered, not cancelled
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(viewer())

    assert registry.asked == 1
