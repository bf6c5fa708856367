#include "tests/testing/testdata.h"
