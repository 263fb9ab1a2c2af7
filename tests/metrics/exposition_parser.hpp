#pragma once

#include <boost/json/value.hpp>

#include <map>
#include <string>
#include <vector>

namespace metrics_test {

// One sample as an independent parser understood it.
struct parsed_sample {
    std::string name;
    std::map<std::string, std::string> labels;
    double value = 0;
};

struct parsed_family {
    std::string name; // prometheus_client drops a counter's _total here
    std::string type;
    std::string help;
    std::vector<parsed_sample> samples;
};

// Parses `text` with /usr/bin/python3's prometheus_client (tests/metrics/
// parse_exposition.py). Throws std::runtime_error with the parser's message
// when it rejects the text or Python cannot run.
std::vector<parsed_family> parse_with_prometheus_client(std::string const& text);

} // namespace metrics_test
