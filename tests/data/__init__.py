"""Tests of the data layer (`ldm.data`)."""
