"""What every driver's messages and key files go through: one scrubber, one filter of
servers' control characters, one writer of private PEM files."""

from __future__ import annotations

import os
import stat

import pytest

from patchbay.drivers.pem import pem_files
from patchbay.drivers.text import REDACTED, printable, scrub


def test_scrub_replaces_a_secret_also_in_its_url_encoded_forms() -> None:
    secret = "p@ss w/rd&key"
    text = f"raw {secret} path p%40ss%20w%2Frd%26key form p%40ss+w/rd%26key"

    scrubbed = scrub(text, [secret])

    assert scrubbed == f"raw {REDACTED} path {REDACTED} form {REDACTED}"


def test_scrub_leaves_text_without_secrets_alone() -> None:
    assert scrub("nothing to hide here", ["hunter22"]) == "nothing to hide here"


def test_printable_turns_control_characters_into_spaces_and_cuts_to_the_limit() -> None:
    assert printable("  bad\r\nthing\x00\x1b[31m  ", 100) == "bad thing [31m"
    assert printable("x" * 300) == "x" * 256
    assert printable("abcdef", 3) == "abc"


def test_pem_files_are_private_and_gone_after_the_block() -> None:
    pems = {"ca.crt": "CA PEM", "tls.key": "KEY PEM", "none": None}
    with pem_files("patchbay-test-", pems) as paths:
        assert set(paths) == {"ca.crt", "tls.key"}
        directory = os.path.dirname(paths["tls.key"])
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(paths["tls.key"]).st_mode) == 0o600
        with open(paths["tls.key"]) as handle:
            assert handle.read() == "KEY PEM"
    assert not os.path.exists(directory)


def test_pem_files_are_removed_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), pem_files("patchbay-test-", {"tls.key": "KEY"}) as paths:
        directory = os.path.dirname(paths["tls.key"])
        raise RuntimeError
    assert not os.path.exists(directory)


def test_no_pem_text_writes_no_files() -> None:
    with pem_files("patchbay-test-", {"ca.crt": None, "tls.key": ""}) as paths:
        assert paths == {}
