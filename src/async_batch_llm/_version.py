"""The distribution version, kept in one place for the build backend."""

VERSION = "0.1.0"
