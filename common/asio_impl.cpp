// The one translation unit that compiles Asio, Asio.SSL and Beast; every other
// file includes their headers only (BOOST_*_SEPARATE_COMPILATION is set on the
// ckb::common target), which keeps rebuilds on two cores tolerable.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
#include <boost/beast/src.hpp>
