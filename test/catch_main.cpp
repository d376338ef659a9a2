// The Catch2 main for loom_tests, compiled once.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
