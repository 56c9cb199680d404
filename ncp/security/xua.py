"""XUA (IHE ITI-40 Provide X-User Assertion): SAML 2.0 assertions in WS-Security on the national SOAP legs.

NCP-A's responding gateway has verified NCP-B's assertion (the HCP and the treatment context); towards its
own XDS infrastructure it re-states that context as a SAML 2.0 Assertion signed with its own key
(:class:`XuaIssuer`), which every SOAP message then carries in ``wsse:Security`` (ITI TF-2b 3.40.4.1,
WSS 1.1 SOAP Message Security 4, WSS SAML Token Profile 1.1 3.3). The receiver checks it with
:class:`XuaVerifier`. The assertion follows the eHDSI HCP Identity Assertion (eHDSI SAML Profiles 2.0):
XSPA/XACML attribute names, ISCO-08 role and eHDSI purpose of use as HL7 coded values, and the patient as
``urn:oasis:names:tc:xacml:2.0:resource:resource-id`` in CX form (ITI-40 Resource-id Option).

Verification resists signature wrapping: the header must hold exactly one assertion, the signature must
be its direct child and reference its ``ID``, and the claims are read only from what signxml returns as
signed. Errors are :class:`XuaError` with the WSS 1.1 fault code (SOAP Message Security 12, Table 5).
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)
from signxml.exceptions import InvalidDigest, SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from ncp.security.tokens import MAX_HCP_LIFETIME, PatientRef
from ncp.soapcore import SoapFault, parse_xml

__all__ = [
    "HEADER",
    "NS",
    "VerifiedXua",
    "XuaContext",
    "XuaError",
    "XuaIssuer",
    "XuaVerifier",
    "national_audience",
    "parse_assertion",
    "read_header",
    "security_header",
]

HEADER = "x-xua-assertion"  # the assertion, base64, from the responding gateway to its XDS facade
NS = {
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "hl7": "urn:hl7-org:v3",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "xs": "http://www.w3.org/2001/XMLSchema",
}
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ORGANIZATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
ORGANIZATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
FACILITY_TYPE = "urn:ehdsi:names:subject:healthcare-facility-type"
_URI_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
_SENDER_VOUCHES = "urn:oasis:names:tc:SAML:2.0:cm:sender-vouches"
_PREVIOUS_SESSION = "urn:oasis:names:tc:SAML:2.0:ac:classes:PreviousSession"
_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
_HCP_QUALIFIER = "urn:ehdsi:assertions:hcp"  # eHDSI: the kind of assertion, by its Issuer's NameQualifier
_ISCO08 = ("2.16.840.1.113883.2.9.6.2.7", "ISCO")
_PURPOSE = ("3bc18518-d305-46c2-a8d6-94bd59856e9e", "eHDSI XSPA PurposeOfUse")
_SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
_DEFAULT_LIFETIME = timedelta(minutes=5)  # as the consumer's tokens (IUA: <= 5 min recommended)
_LEEWAY_S = 60.0  # eHDSI CONDITIONS_SECOND_RANGE
_MAX_HEADER_BYTES = 32 * 1024
_SIGNATURE_METHODS = frozenset({SignatureMethod.ECDSA_SHA256, SignatureMethod.RSA_SHA256})
# what a verified signature must be (signxml's configuration is frozen: one for every verification)
_EXPECTED = SignatureConfiguration(
    location="./",  # the signature is the assertion's own child (SAML core 5.4.1)
    expect_references=1,
    signature_methods=_SIGNATURE_METHODS,
    digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
)


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def national_audience(country: str) -> str:
    """The audience of the XUA assertions a country's NCP addresses to its own XDS infrastructure."""
    return f"urn:xcwado:national:{country}"


class XuaError(Exception):
    """A refused assertion; ``code`` is the WSS 1.1 fault code (SOAP Message Security 12)."""

    def __init__(self, reason: str, code: str = "FailedAuthentication") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class XuaContext:
    """The HCP and treatment context an assertion carries."""

    subject: str  # the HCP's id: NameID and subject-id
    role: str | None = None  # ISCO-08 code
    organisation: str | None = None
    organisation_id: str | None = None
    facility: str | None = None  # eHDSI healthcare facility type
    purpose_of_use: str | None = None  # TREATMENT | EMERGENCY
    patient: PatientRef | None = None


@dataclass(frozen=True)
class VerifiedXua:
    assertion_id: str
    issuer: str
    context: XuaContext
    not_on_or_after: datetime


# -- issuing -----------------------------------------------------------------------------------------
class XuaIssuer:
    """Signs assertions as ``issuer`` with a key and its certificate (enveloped XML-DSig, exc-c14n,
    SHA-256; ECDSA or RSA following the key, as the SAML 2.0 core 5.4 signature profile allows)."""

    def __init__(
        self,
        issuer: str,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        cert: x509.Certificate,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self._key = key
        self._cert = cert
        self._clock = clock
        ecdsa = isinstance(key, ec.EllipticCurvePrivateKey)
        self._method = SignatureMethod.ECDSA_SHA256 if ecdsa else SignatureMethod.RSA_SHA256

    @classmethod
    def from_files(
        cls, issuer: str, key_file: Path, cert_file: Path, *, clock: Callable[[], float] = time.time
    ) -> XuaIssuer:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{key_file}: an XUA signing key must be EC or RSA")
        return cls(issuer, key, x509.load_pem_x509_certificate(cert_file.read_bytes()), clock=clock)

    def issue(
        self, context: XuaContext, *, audience: str, lifetime: timedelta = _DEFAULT_LIFETIME
    ) -> etree._Element:
        """A signed saml:Assertion for ``audience``, valid from now for ``lifetime``."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        assertion_id = f"_{uuid.uuid4().hex}"
        assertion = _assertion(assertion_id, self.issuer, context, audience, now, now + lifetime)
        signer = XMLSigner(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm=self._method,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        signed: etree._Element = signer.sign(
            assertion, key=self._key, cert=[self._cert], reference_uri=assertion_id, id_attribute="ID"
        )
        return signed

    def header(self, context: XuaContext, *, audience: str) -> str:
        """:meth:`issue`, serialised and base64-encoded for the :data:`HEADER` request header."""
        return base64.b64encode(etree.tostring(self.issue(context, audience=audience))).decode("ascii")


def _assertion(
    assertion_id: str, issuer: str, ctx: XuaContext, audience: str, start: datetime, end: datetime
) -> etree._Element:
    """SAML 2.0 core 2.3.3, shaped as the eHDSI HCP Identity Assertion (ITI TF-2b 3.40.4.1.2)."""
    a = etree.Element(_q("saml", "Assertion"), nsmap={"saml": NS["saml"], "xsi": NS["xsi"], "xs": NS["xs"]})
    a.attrib.update({"ID": assertion_id, "IssueInstant": _instant(start), "Version": "2.0"})
    issuer_el = etree.SubElement(a, _q("saml", "Issuer"), NameQualifier=_HCP_QUALIFIER)
    issuer_el.text = issuer
    etree.SubElement(a, _q("ds", "Signature"), Id="placeholder", nsmap={"ds": NS["ds"]})  # after Issuer
    subject = etree.SubElement(a, _q("saml", "Subject"))
    etree.SubElement(subject, _q("saml", "NameID"), Format=_UNSPECIFIED).text = ctx.subject
    etree.SubElement(subject, _q("saml", "SubjectConfirmation"), Method=_SENDER_VOUCHES)
    conditions = etree.SubElement(
        a, _q("saml", "Conditions"), NotBefore=_instant(start), NotOnOrAfter=_instant(end)
    )
    restriction = etree.SubElement(conditions, _q("saml", "AudienceRestriction"))
    etree.SubElement(restriction, _q("saml", "Audience")).text = audience
    authn = etree.SubElement(a, _q("saml", "AuthnStatement"), AuthnInstant=_instant(start))
    context = etree.SubElement(authn, _q("saml", "AuthnContext"))
    etree.SubElement(context, _q("saml", "AuthnContextClassRef")).text = _PREVIOUS_SESSION
    statement = etree.SubElement(a, _q("saml", "AttributeStatement"))
    for name, text in _string_attributes(ctx):
        value = _attribute(statement, name)
        value.set(_q("xsi", "type"), "xs:string")
        value.text = text
    if ctx.role:
        _attribute(statement, ROLE).append(_coded_value("Role", ctx.role, _ISCO08))
    if ctx.purpose_of_use:
        _attribute(statement, PURPOSE_OF_USE).append(
            _coded_value("PurposeOfUse", ctx.purpose_of_use, _PURPOSE)
        )
    return a


def _string_attributes(ctx: XuaContext) -> list[tuple[str, str]]:
    values = [
        (SUBJECT_ID, ctx.subject),
        (ORGANIZATION, ctx.organisation),
        (ORGANIZATION_ID, ctx.organisation_id),
        (FACILITY_TYPE, ctx.facility),
        (RESOURCE_ID, ctx.patient.cx() if ctx.patient else None),
    ]
    return [(name, value) for name, value in values if value]


def _attribute(statement: etree._Element, name: str) -> etree._Element:
    attribute = etree.SubElement(statement, _q("saml", "Attribute"), Name=name, NameFormat=_URI_FORMAT)
    return etree.SubElement(attribute, _q("saml", "AttributeValue"))


def _coded_value(local: str, code: str, system: tuple[str, str]) -> etree._Element:
    """An HL7 v3 CE value inside AttributeValue, as eHDSI writes role and purpose of use."""
    return etree.Element(
        f"{{{NS['hl7']}}}{local}",
        nsmap={"hl7": NS["hl7"]},
        code=code,
        codeSystem=system[0],
        codeSystemName=system[1],
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # SAML core 1.3.3: UTC, no offset


# -- WS-Security header ------------------------------------------------------------------------------
def security_header(assertion: etree._Element) -> etree._Element:
    """``wsse:Security`` (mustUnderstand) holding the assertion (WSS SAML Token Profile 1.1 3.3.1)."""
    header = etree.Element(_q("wsse", "Security"), nsmap={"wsse": NS["wsse"], "s": _SOAP_ENV})
    header.set(f"{{{_SOAP_ENV}}}mustUnderstand", "true")
    header.append(assertion)
    return header


def read_header(value: str) -> etree._Element:
    """The assertion of a :data:`HEADER` value (base64 of its XML), parsed hardened; ValueError if not one."""
    if len(value) > _MAX_HEADER_BYTES:
        raise ValueError("the XUA assertion header is too large")
    try:
        data = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the XUA assertion header is not base64") from None
    return parse_assertion(data)


def parse_assertion(data: bytes) -> etree._Element:
    """One saml:Assertion document, parsed as hardened as a SOAP message (no DTD, no entities)."""
    try:
        root = parse_xml(data)
    except SoapFault as fault:
        raise ValueError(f"the XUA assertion is not usable XML ({fault.reason})") from None
    if root.tag != _q("saml", "Assertion"):
        raise ValueError("the XUA assertion header does not hold a saml:Assertion")
    return root


# -- verifying ---------------------------------------------------------------------------------------
class XuaVerifier:
    """Checks assertions addressed to ``audience`` and signed by one of ``trusted`` (issuer -> the one
    certificate pinned for it: a signature is never checked against a certificate the message brings)."""

    def __init__(
        self,
        trusted: Mapping[str, x509.Certificate],
        audience: str,
        *,
        leeway: float = _LEEWAY_S,
        max_lifetime: timedelta = MAX_HCP_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._trusted = dict(trusted)
        self._audience = audience
        self._leeway = timedelta(seconds=leeway)
        self._max_lifetime = max_lifetime
        self._clock = clock

    @classmethod
    def from_files(cls, trusted: Mapping[str, Path], audience: str) -> XuaVerifier:
        certs = {
            issuer: x509.load_pem_x509_certificate(path.read_bytes()) for issuer, path in trusted.items()
        }
        return cls(certs, audience)

    def verify(self, security: etree._Element | None) -> VerifiedXua:
        """The verified assertion of a ``wsse:Security`` header, else :class:`XuaError`."""
        if security is None:
            raise XuaError("no wsse:Security header: an XUA assertion is required", "InvalidSecurity")
        assertions = list(security.iter(_q("saml", "Assertion")))
        if len(assertions) != 1 or assertions[0].getparent() is not security:
            raise XuaError("wsse:Security must hold exactly one saml:Assertion", "InvalidSecurity")
        signed = self._signed(assertions[0])
        return _read(signed, self._check_conditions(signed))

    def _signed(self, assertion: etree._Element) -> etree._Element:
        """What the signature covers, from signxml (never the element we were handed)."""
        issuer = (assertion.findtext(_q("saml", "Issuer")) or "").strip()
        cert = self._trusted.get(issuer)
        if cert is None:
            raise XuaError(f"assertion issuer {issuer!r} is not trusted here")
        try:
            result = XMLVerifier().verify(
                etree.tostring(assertion), x509_cert=cert, id_attribute="ID", expect_config=_EXPECTED
            )
        except InvalidDigest:
            raise XuaError("the assertion was changed after it was signed", "FailedCheck") from None
        except SignXMLException as exc:
            raise XuaError(f"the assertion's signature does not verify ({type(exc).__name__})") from None
        signed = result.signed_xml if isinstance(result, VerifyResult) else None
        if signed is None or signed.tag != _q("saml", "Assertion") or signed.get("ID") != assertion.get("ID"):
            raise XuaError("the signature does not cover the assertion", "FailedCheck")
        return signed

    def _check_conditions(self, signed: etree._Element) -> datetime:
        """SAML core 2.5.1: NotBefore/NotOnOrAfter (with leeway) and the audience restriction; the end."""
        conditions = signed.find(_q("saml", "Conditions"))
        if conditions is None:
            raise XuaError("the assertion has no Conditions")
        start = _parse_instant(conditions.get("NotBefore"))
        end = _parse_instant(conditions.get("NotOnOrAfter"))
        now = datetime.fromtimestamp(self._clock(), UTC)
        if end - start > self._max_lifetime:
            raise XuaError("the assertion's validity is longer than allowed")
        if now + self._leeway < start:
            raise XuaError("the assertion is not yet valid")
        if now - self._leeway >= end:
            raise XuaError("the assertion has expired")
        audiences = {(a.text or "").strip() for a in conditions.iter(_q("saml", "Audience"))}
        if self._audience not in audiences:
            raise XuaError("the assertion is not addressed to this service")
        return end


def _parse_instant(value: str | None) -> datetime:
    try:
        moment = datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError:
        raise XuaError(
            "the assertion's Conditions need NotBefore and NotOnOrAfter", "InvalidSecurity"
        ) from None
    if moment.tzinfo is None:
        raise XuaError("assertion times must be UTC", "InvalidSecurity")
    return moment


def _read(signed: etree._Element, end: datetime) -> VerifiedXua:
    """The context of a signed assertion (its attributes, SAML core 2.7.3)."""
    values: dict[str, etree._Element] = {}
    for attribute in signed.iterfind(f"{_q('saml', 'AttributeStatement')}/{_q('saml', 'Attribute')}"):
        value = attribute.find(_q("saml", "AttributeValue"))
        if value is not None:
            values[attribute.get("Name", "")] = value
    subject = (signed.findtext(f"{_q('saml', 'Subject')}/{_q('saml', 'NameID')}") or "").strip()
    if not subject:
        raise XuaError("the assertion names no subject", "InvalidSecurity")
    context = XuaContext(
        subject=subject,
        role=_code(values.get(ROLE)),
        organisation=_text(values.get(ORGANIZATION)),
        organisation_id=_text(values.get(ORGANIZATION_ID)),
        facility=_text(values.get(FACILITY_TYPE)),
        purpose_of_use=_code(values.get(PURPOSE_OF_USE)),
        patient=_patient(_text(values.get(RESOURCE_ID))),
    )
    issuer = (signed.findtext(_q("saml", "Issuer")) or "").strip()
    return VerifiedXua(signed.get("ID", ""), issuer, context, end)


def _text(value: etree._Element | None) -> str | None:
    return (value.text or "").strip() or None if value is not None else None


def _code(value: etree._Element | None) -> str | None:
    coded = next((c for c in value if isinstance(c.tag, str)), None) if value is not None else None
    return coded.get("code") if coded is not None else None


def _patient(cx: str | None) -> PatientRef | None:
    """``id^^^&issuer&ISO`` back to a patient; anything else is a malformed assertion."""
    if cx is None:
        return None
    try:
        return PatientRef.from_cx(cx)
    except ValueError:
        raise XuaError(
            "resource-id is not a patient id in CX form (id^^^&oid&ISO)", "InvalidSecurity"
        ) from None
