#pragma once

// The CouchDB wire shapes the scripted test servers of tests/couch send:
// chunked framing, status responses, continuous rows and normal-feed bodies.

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace couch_test {

inline std::string chunk(std::string const& s) {
    char size[20];
    std::snprintf(size, sizeof size, "%zx", s.size());
    return std::string(size) + "\r\n" + s + "\r\n";
}
inline std::string const chunked_200 = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
inline std::string status_response(int code, std::string const& body) {
    return "HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}
inline std::string row_line(std::string const& id, std::string const& seq) {
    return R"({"seq":")" + seq + R"(","id":")" + id + R"(","changes":[{"rev":"1-a"}],"doc":{"_id":")" + id +
           R"(","_rev":"1-a"}})" "\n";
}
inline std::string normal_body(std::vector<std::pair<std::string, std::string>> const& rows, std::string const& last, int pending) {
    std::string b = "{\"results\":[\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        auto line = row_line(rows[i].first, rows[i].second);
        line.pop_back();
        b += (i ? ",\r\n" : "") + line;
    }
    return b + "\n],\n\"last_seq\":\"" + last + "\",\"pending\":" + std::to_string(pending) + "}\n";
}

} // namespace couch_test
