#include "couch/error.hpp"

#include <string>

namespace couch {
namespace {

// boost::system::error_category has a protected non-virtual destructor by
// design (categories are never deleted through it); silence the check here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category final : public boost::system::error_category {
public:
    char const* name() const noexcept override { return "couch"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
        case errc::row_too_large:
            return "change row larger than the configured maximum";
        case errc::malformed_row:
            return "malformed change row";
        case errc::malformed_body:
            return "malformed _changes response body";
        case errc::envelope_too_large:
            return "_changes response envelope too large";
        case errc::server_error_row:
            return "the server reported an error inside the feed";
        case errc::chunk_size_not_hex:
            return "chunk-size line is not hex (database deleted under the open feed?)";
        case errc::bad_chunk_framing:
            return "broken chunked transfer encoding";
        case errc::truncated_body:
            return "_changes response ended in the middle of a row";
        }
        return "unknown couch error";
    }
};
#pragma GCC diagnostic pop

} // namespace

boost::system::error_category const& error_category() noexcept {
    static category const instance;
    return instance;
}

} // namespace couch
