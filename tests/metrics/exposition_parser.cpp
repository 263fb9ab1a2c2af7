#include "tests/metrics/exposition_parser.hpp"

#include "tests/support/test_env.hpp"

#include <boost/json/parse.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace metrics_test {

std::vector<parsed_family> parse_with_prometheus_client(std::string const& text) {
    auto dir = test_support::make_temp_dir("ckb-metrics-parse");
    auto in_path = dir + "/exposition.txt";
    auto err_path = dir + "/stderr.txt";
    {
        std::ofstream out(in_path, std::ios::binary);
        out << text;
        if (!out) {
            throw std::runtime_error("cannot write " + in_path);
        }
    }
    // /usr/bin/python3 explicitly: it is the interpreter Debian's
    // python3-prometheus-client is installed for.
    std::string cmd = std::string("/usr/bin/python3 '") + CKB_METRICS_TEST_DIR + "/parse_exposition.py' '" + in_path +
                      "' 2>'" + err_path + "'";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
        throw std::runtime_error("cannot run " + cmd);
    }
    std::string json_text;
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        json_text.append(buf, n);
    }
    int status = ::pclose(p);
    if (status != 0) {
        throw std::runtime_error("parse_exposition.py failed (status " + std::to_string(status) +
                                 "): " + test_support::read_file(err_path));
    }
    std::vector<parsed_family> out;
    auto parsed = boost::json::parse(json_text);
    for (auto const& f : parsed.as_array()) {
        auto const& o = f.as_object();
        parsed_family fam;
        fam.name = std::string(o.at("name").as_string());
        fam.type = std::string(o.at("type").as_string());
        fam.help = std::string(o.at("documentation").as_string());
        for (auto const& s : o.at("samples").as_array()) {
            auto const& so = s.as_object();
            parsed_sample ps;
            ps.name = std::string(so.at("name").as_string());
            for (auto const& [k, v] : so.at("labels").as_object()) {
                ps.labels[std::string(k)] = std::string(v.as_string());
            }
            ps.value = std::strtod(std::string(so.at("value").as_string()).c_str(), nullptr);
            fam.samples.push_back(std::move(ps));
        }
        out.push_back(std::move(fam));
    }
    return out;
}

} // namespace metrics_test
