#!/usr/bin/perl
# Drives Perl's HTTP::DAV (the library behind the `dave` client, Debian libhttp-dav-perl)
# through the steps of tests/e2e/clients/scenario.py: a JSON plan on stdin, one JSON result
# per step on stdout. Usage: perl driver.pl BASE_URL USER PASSWORD < plan.json
#
# HTTP::DAV takes URLs, so each plain share path is percent-encoded here (UTF-8, every
# reserved character escaped). The library keeps the locks it took and sends their tokens
# in an If header with every later write (PUT, MOVE, ...) to a locked URL.
#
# HTTP::DAV's get() and delete() treat '*', '?' and '[' in the (decoded) last path segment as
# a glob and match it against the still-encoded hrefs of a listing, so a name with '?' is
# never found ("No match found"). For such names this driver calls the resource-level
# get/delete instead, which send the same request without globbing. And when get() fails
# (a 404, say), it returns without closing its multi-request state, so every later DELETE,
# COPY, MOVE, MKCOL of the object reports failure whatever the server answered: the driver
# closes that state after a failed step, so one failure does not spill into the next ones.
use strict;
use warnings;

use Encode qw(decode_utf8);
use HTTP::DAV;
use HTTP::DAV::Utils;
use JSON::PP;
use URI::Escape qw(uri_escape_utf8 uri_unescape);

my ( $base, $user, $password ) = @ARGV;
$base =~ s{/*$}{};

sub client {
    my $dav = HTTP::DAV->new();
    $dav->credentials( -user => $user, -pass => $password, -url => $base );
    $dav->open( -url => "$base/" ) or die "open $base/: " . $dav->message . "\n";
    return $dav;
}
my $dav     = client();
my $foreign = client();    # a second client: holds none of the first one's locks

sub url_of {
    my ($path) = @_;
    return $base . join( '/', map { uri_escape_utf8($_) } split( m{/}, $path, -1 ) );
}

sub overwrite {
    my ($step) = @_;
    my @args = defined $step->{overwrite} && !$step->{overwrite} ? ( -overwrite => 'F' ) : ();
    push @args, ( -depth => $step->{depth} ) if defined $step->{depth};
    return @args;
}

sub globby { $_[0] =~ m{[*?\[][^/]*$} }

my %ops = (
    mkdir       => sub { $dav->mkcol( -url => url_of( $_[0]{path} ) . '/' ) },
    put => sub {
        die "HTTP::DAV's put cannot refuse to overwrite\n" if defined $_[0]{overwrite} && !$_[0]{overwrite};
        return $dav->put( -local => $_[0]{file}, -url => url_of( $_[0]{path} ) );
    },
    put_foreign => sub {
        my $ok = $foreign->put( -local => $_[0]{file}, -url => url_of( $_[0]{path} ) );
        return ( $ok, $foreign );
    },
    get => sub {
        my ( $url, $file ) = ( url_of( $_[0]{path} ), $_[0]{file} );
        return $dav->get( -url => $url, -to => $file ) unless globby( $_[0]{path} );
        return $dav->new_resource( -uri => $url )->get( -save_to => $file )->is_success;
    },
    copy => sub { $dav->copy( -url => url_of( $_[0]{from} ), -dest => url_of( $_[0]{to} ), overwrite( $_[0] ) ) },
    move => sub { $dav->move( -url => url_of( $_[0]{from} ), -dest => url_of( $_[0]{to} ), overwrite( $_[0] ) ) },
    delete => sub {
        my $url = url_of( $_[0]{path} );
        return $dav->delete( -url => $url ) unless globby( $_[0]{path} );
        return $dav->new_resource( -uri => $url )->delete->is_success;
    },
    lock   => sub {
        my $url = url_of( $_[0]{path} );
        $dav->lock( -url => $url, -timeout => '10m' ) or return 0;
        my $tokens = $dav->get_lockedresourcelist->get_locktokens( -uri => $url, -owned => 1 );
        my ($token) = map {@$_} values %$tokens;
        return ( 1, $dav, $token );
    },
    unlock => sub { $dav->unlock( -url => url_of( $_[0]{path} ) ) },
    list   => sub {
        my $resource = $dav->propfind( -url => url_of( $_[0]{path} ) . '/', -depth => 1 ) or return 0;
        my @items;
        for my $member ( $resource->get_resourcelist ? $resource->get_resourcelist->get_resources : () ) {
            my $leaf = HTTP::DAV::Utils::get_leafname( $member->get_uri->path );
            push @items, {
                name => decode_utf8( uri_unescape($leaf) ),
                size => 0 + ( $member->get_property('getcontentlength') || 0 ),
                dir  => $member->is_collection ? JSON::PP::true : JSON::PP::false,
            };
        }
        return ( 1, $dav, \@items );
    },
);

my $plan = JSON::PP->new->utf8->decode( do { local $/; <STDIN> } );
my @results;
for my $step (@$plan) {
    my ( $ok, $who, $value ) = eval { $ops{ $step->{op} }->($step) };
    $who ||= $dav;
    if ( $@ || !$ok ) {
        $who->_end_multi_op if $who->{_multi_op};
        my $resp = $who->get_last_response;
        push @results, {
            ok     => JSON::PP::false,
            status => $resp ? 0 + $resp->code : undef,
            error  => $@ || $who->message,
        };
    }
    else {
        push @results, { ok => JSON::PP::true, value => $value };
    }
}
print JSON::PP->new->utf8->canonical->encode( \@results );
