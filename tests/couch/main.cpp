#define BOOST_TEST_MODULE couch
#include <boost/test/unit_test.hpp>
