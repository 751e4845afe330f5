"""Loopback IP allocation for pods and Services from the sandbox's ``ip_prefix``."""

from __future__ import annotations

import threading


class IpPoolExhausted(RuntimeError):
    """Every address of a pool is in use."""


class IpPool:
    """Addresses ``{base}.N`` for N in 2..254, handed out round-robin so freed ones rest a while."""

    def __init__(self, base: str) -> None:
        """Create a pool.

        Args:
            base: three octets, e.g. ``"127.37.0"``.
        """
        octets = base.split(".")
        if len(octets) != 3 or octets[0] != "127" or not all(o.isdigit() for o in octets):
            raise ValueError(f"ip_prefix {base!r} must look like '127.A.B' (a loopback /24 base)")
        if not all(0 <= int(o) <= 255 for o in octets):
            raise ValueError(f"ip_prefix {base!r} has an octet outside 0..255")
        self.base = base
        self._used: set[str] = set()
        self._next = 2
        self._lock = threading.Lock()

    def allocate(self, wanted: str | None = None) -> str:
        """Take a free address (``wanted`` when it is in the pool and free).

        Args:
            wanted: a specific address to reserve, e.g. a Service's requested clusterIP.

        Returns:
            The address.

        Raises:
            IpPoolExhausted: when no address is free.
        """
        with self._lock:
            if wanted and self.contains(wanted) and wanted not in self._used:
                self._used.add(wanted)
                return wanted
            for _ in range(253):
                candidate = f"{self.base}.{self._next}"
                self._next = 2 if self._next >= 254 else self._next + 1
                if candidate not in self._used:
                    self._used.add(candidate)
                    return candidate
        raise IpPoolExhausted(f"no free address left in {self.base}.0/24")

    def reserve(self, address: str) -> None:
        """Mark ``address`` as used (an object that already carries it).

        Args:
            address: the address.
        """
        with self._lock:
            if self.contains(address):
                self._used.add(address)

    def release(self, address: str) -> None:
        """Give ``address`` back.

        Args:
            address: the address.
        """
        with self._lock:
            self._used.discard(address)

    def contains(self, address: str) -> bool:
        """Tell whether ``address`` belongs to this pool.

        Args:
            address: the address.

        Returns:
            True when it is ``{base}.N``.
        """
        head, _, last = address.rpartition(".")
        return head == self.base and last.isdigit() and 2 <= int(last) <= 254


def pools_for(ip_prefix: str) -> tuple[IpPool, IpPool]:
    """The pod pool ``127.A.B.N`` and the Service pool ``127.A.(B+1).N`` of a sandbox.

    Args:
        ip_prefix: ``127.A.B`` with B < 255.

    Returns:
        ``(pods, services)``.

    Raises:
        ValueError: when the prefix is malformed or B is 255.
    """
    pods = IpPool(ip_prefix)
    first, second, third = ip_prefix.split(".")
    if int(third) >= 255:
        raise ValueError(f"ip_prefix {ip_prefix!r}: third octet must be < 255 (Services use B+1)")
    services = IpPool(f"{first}.{second}.{int(third) + 1}")
    return pods, services
