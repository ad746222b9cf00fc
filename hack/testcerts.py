"""Short-lived certificates for the test servers: a CA, and leaves it signs.

ca = make_ca("patchbay test CA")
cert_pem, key_pem = make_leaf(ca, "db.patchbay.test")   # also valid for 127.0.0.1
trusted = ca_pem(ca)
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CertificateAuthority = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    # Backdated a little so clock skew cannot make a fresh certificate "not yet valid".
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=1)
    )


def make_ca(common_name: str) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return _validity(builder).sign(key, hashes.SHA256()), key


def make_leaf(ca: CertificateAuthority, dns_name: str) -> tuple[str, str]:
    """Certificate and key PEM for dns_name and 127.0.0.1, signed by ca."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_name))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    )
    cert = _validity(builder).sign(ca[1], hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem(key)


def ca_pem(ca: CertificateAuthority) -> str:
    return ca[0].public_bytes(serialization.Encoding.PEM).decode()
