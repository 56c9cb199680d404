"""The clinician's web portal, server-side viewing and the WIA facade at NCP-B (see :mod:`ncp.portal.app`)."""

from ncp.portal.app import create_portal_app, with_portal
from ncp.portal.settings import PortalSettings

__all__ = ["PortalSettings", "create_portal_app", "with_portal"]
