"""Which Connection is the default of its connector in a namespace: the oldest of
those claiming it. Indexed, so a conflict is found without a scan."""

from __future__ import annotations

from collections import defaultdict

from patchbay.controller.cache import Key
from patchbay.core.resolve import ConnectorKey

Claim = tuple[str, ConnectorKey]  # namespace, connector


class DefaultClaims:
    def __init__(self) -> None:
        # (namespace, connector) -> {name: creationTimestamp} of Connections claiming default
        self._claims: dict[Claim, dict[str, str]] = defaultdict(dict)

    def claim(self, key: Key, created: str, ckey: ConnectorKey | None) -> list[Claim]:
        """Record what the Connection claims now (``None``: nothing). Returns the claims
        whose winner changed, whose other claimants must re-derive their status."""
        changed = self.release(key)
        if ckey is not None:
            claim = (key[0], ckey)
            before = self.winner(claim)
            self._claims[claim][key[1]] = created
            if before not in (None, self.winner(claim)):
                changed.append(claim)
        return changed

    def release(self, key: Key) -> list[Claim]:
        changed: list[Claim] = []
        for claim, names in list(self._claims.items()):
            if claim[0] == key[0] and key[1] in names:
                before = self.winner(claim)
                del names[key[1]]
                if not names:
                    del self._claims[claim]
                if before == key[1]:
                    changed.append(claim)
        return changed

    def claimants(self, claim: Claim) -> list[Key]:
        return [(claim[0], name) for name in self._claims.get(claim, {})]

    def winner(self, claim: Claim) -> str | None:
        """Of the Connections claiming default for one connector, the oldest wins."""
        claims = self._claims.get(claim)
        if not claims:
            return None
        return min((created, name) for name, created in claims.items())[1]

    def conflict(self, key: Key, ckey: ConnectorKey | None) -> str | None:
        """Why a Connection claiming default is not it (``ckey`` None: it claims nothing)."""
        if ckey is None:
            return None
        winner = self.winner((key[0], ckey))
        if winner is None or winner == key[1]:
            return None
        return f"Connection {winner!r} is the older default for this connector"
