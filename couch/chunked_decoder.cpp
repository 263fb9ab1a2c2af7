#include "couch/chunked_decoder.hpp"

#include <algorithm>

namespace couch {
namespace {

constexpr std::size_t max_chunk_extension_bytes = 4096;

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

} // namespace

boost::system::error_code chunked_decoder::next(std::string_view& in, std::string_view& piece) {
    piece = {};
    if (error_) {
        return error_;
    }
    while (!in.empty() && state_ != state::done) {
        char const c = in.front();
        switch (state_) {
        case state::size: {
            int const d = hex_value(c);
            if (d >= 0) {
                // 15 hex digits is already 2^60 bytes: more is garbage, not a size.
                if (size_digits_ >= 15) {
                    return error_ = errc::bad_chunk_framing;
                }
                remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(d);
                ++size_digits_;
            } else if (size_digits_ == 0) {
                return error_ = errc::chunk_size_not_hex;
            } else if (c == ';' || c == ' ' || c == '\t') {
                state_ = state::extension;
                remaining_extension_ = max_chunk_extension_bytes;
            } else if (c == '\r') {
                state_ = state::size_lf;
            } else {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            break;
        }
        case state::extension:
            if (c == '\r') {
                state_ = state::size_lf;
            } else if (--remaining_extension_ == 0) {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            break;
        case state::size_lf:
            if (c != '\n') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            size_digits_ = 0;
            state_ = remaining_ == 0 ? state::trailer_start : state::data;
            break;
        case state::data: {
            auto const n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
            piece = in.substr(0, n);
            in.remove_prefix(n);
            remaining_ -= n;
            if (remaining_ == 0) {
                state_ = state::data_cr;
            }
            return {};
        }
        case state::data_cr:
            if (c != '\r') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            state_ = state::data_lf;
            break;
        case state::data_lf:
            if (c != '\n') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            state_ = state::size;
            break;
        case state::trailer_start:
            state_ = c == '\r' ? state::final_lf : state::trailer;
            in.remove_prefix(1);
            break;
        case state::trailer:
            if (c == '\n') {
                state_ = state::trailer_start;
            }
            in.remove_prefix(1);
            break;
        case state::final_lf:
            if (c != '\n') {
                return error_ = errc::bad_chunk_framing;
            }
            in.remove_prefix(1);
            state_ = state::done;
            break;
        case state::done:
            break;
        }
    }
    return {};
}

} // namespace couch
