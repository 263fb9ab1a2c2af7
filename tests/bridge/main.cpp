#define BOOST_TEST_MODULE bridge
#include <boost/test/unit_test.hpp>
