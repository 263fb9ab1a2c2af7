#define BOOST_TEST_MODULE kafka
#include <boost/test/unit_test.hpp>
