"""The registry role: a national or regional MHD Document Registry (ITI-65/67/68, PDQm), or, for a registry
of ``kind = "xds"``, an XDS.b registry and repository with its MHD facade (:mod:`ncp.registry.xds`)."""
