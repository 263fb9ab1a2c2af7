#pragma once

#include "couch/error.hpp"

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace couch {

// Decodes HTTP/1.1 chunked transfer encoding incrementally and without
// copying: next() hands out pieces of the caller's input. Knows CouchDB's
// 06k race: a chunk-size line that does not start with a hex digit (CouchDB
// wrote a whole `HTTP/1.1 404` response into the open body) is reported as
// errc::chunk_size_not_hex, which the feed treats as "database missing".
//
// Not thread-safe; one instance per response.
class chunked_decoder {
public:
    // Consumes bytes from the front of `in` (advancing it) up to and
    // including the next piece of body data, which is returned in `piece`
    // (a view into the original input, possibly empty when `in` held only
    // framing). Call repeatedly until `in` is empty or done(). Errors are
    // sticky: after an error, every call returns it again.
    boost::system::error_code next(std::string_view& in, std::string_view& piece);

    // The terminating `0\r\n\r\n` (and any trailers) has been consumed.
    bool done() const noexcept { return state_ == state::done; }

    void reset() noexcept { *this = chunked_decoder(); }

private:
    enum class state { size, extension, size_lf, data, data_cr, data_lf, trailer_start, trailer, final_lf, done };
    state state_ = state::size;
    std::uint64_t remaining_ = 0;
    int size_digits_ = 0;
    std::size_t remaining_extension_ = 0;
    boost::system::error_code error_;
};

} // namespace couch
