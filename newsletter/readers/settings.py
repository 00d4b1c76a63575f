"""The `signup:` settings section, kept beside the code it configures."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from newsletter.settingsbase import _Section


class SignupSection(_Section):
    # A new reader gets no issue before confirming from the mail we send (a list's own
    # `double_opt_in:` overrides this). Off only for a list whose form sits behind a login.
    double_opt_in: bool = True
    # A confirmation link expires after this many hours.
    confirm_hours: int = Field(48, ge=1, le=24 * 30)
    # Sign-up posts one client address may make per hour, and posts naming one email
    # address per hour, before the answer is 429.
    per_client_hour: int = Field(20, ge=1, le=100_000)
    per_address_hour: int = Field(5, ge=1, le=1000)
    # Reverse proxies whose X-Forwarded-For is believed (addresses or networks). Without,
    # the client address is the peer's: behind a proxy all sign-ups would share one limit.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as err:
                raise ValueError(f"{item!r} is not an IP address or network, e.g. "
                                 "127.0.0.1 or 10.0.0.0/8") from err
        return value

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies]
