"""Settings of the XCA roles: a region's Responding Gateway and the country's Initiating Gateway."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QUERY_PATH", "RETRIEVE_PATH", "Community", "InitiatingSettings", "query_url", "retrieve_url"]

QUERY_PATH = "/xca/iti38"  # RespondingGateway_CrossGatewayQuery
RETRIEVE_PATH = "/xca/iti39"  # RespondingGateway_CrossGatewayRetrieve


def query_url(base: str) -> str:
    """The ITI-38 endpoint of the Responding Gateway listening at ``base``."""
    return base.rstrip("/") + QUERY_PATH


def retrieve_url(base: str) -> str:
    """The ITI-39 endpoint of the Responding Gateway listening at ``base``."""
    return base.rstrip("/") + RETRIEVE_PATH


@dataclass(frozen=True)
class Community:
    """One region as the Initiating Gateway knows it: its name, homeCommunityId and listener."""

    name: str  # the topology's registry id, for people reading an OperationOutcome
    home_community_id: str  # bare OID
    base: str  # the Responding Gateway's listener (ITI-38 at query_url, ITI-39 at retrieve_url)

    @property
    def home(self) -> str:
        return f"urn:oid:{self.home_community_id}"


@dataclass(frozen=True)
class InitiatingSettings:
    public_base_url: str  # the MHD facade's FHIR base (…/fhir) that NCP-A's gateway asks
    home_community_id: str  # bare OID of NCP-A's community, presented on every DocumentReference
    communities: tuple[Community, ...]
    timeout_s: float = 30.0  # per Responding Gateway exchange; a slower region is reported, not waited for
    max_message_bytes: int = 32 * 1024 * 1024  # one answer (beyond: the region is reported as failed)
