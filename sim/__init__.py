"""The Microsoft Graph simulator used by the demo, the tests and the benchmarks."""
