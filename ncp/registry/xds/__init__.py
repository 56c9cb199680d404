"""XDS.b / XDS-I.b Document Registry and Repository (SOAP 1.2, ebRIM 3.0): ITI-41/42, ITI-18, ITI-43, and
the MHD Document Responder facade (XDS Document Consumer) that puts them behind NCP-A."""
