"""veza-ops: release and disaster-recovery operations of the Veza platform."""

__version__ = "0.1.0"
