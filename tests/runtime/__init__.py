"""Tests of the runtime: compile cache, compiler, executor."""
