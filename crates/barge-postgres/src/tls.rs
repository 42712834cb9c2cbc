//! TLS for PostgreSQL connections: `postgres-native-tls`, with reads handed a bounded window.
//!
//! Its stream zero-fills the whole unfilled part of the read buffer on every read
//! (`ReadBuf::initialize_unfilled`). While a large message arrives, tokio-postgres has reserved
//! room for all of it, so each 16 KB TLS record cost a memset of up to the whole message: a 50 MB
//! value took 612 s to copy over TLS against 22 s without (95% of the reader's time in memset).
//! [`Bounded`] passes the stream at most [`READ_WINDOW`] bytes of the buffer at a time, zeroed
//! once (`initialize_unfilled_to` remembers what is initialized), so a read costs what it reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// The most a single read is offered: a few TLS records.
pub const READ_WINDOW: usize = 64 * 1024;

/// [`postgres_native_tls::MakeTlsConnector`] whose streams read through [`Bounded`].
#[derive(Clone)]
pub struct MakeBoundedTls(pub postgres_native_tls::MakeTlsConnector);

impl<S> MakeTlsConnect<S> for MakeBoundedTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Bounded<postgres_native_tls::TlsStream<S>>;
    type TlsConnect = BoundedConnect<postgres_native_tls::TlsConnector>;
    type Error = native_tls::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        MakeTlsConnect::<S>::make_tls_connect(&mut self.0, domain).map(BoundedConnect)
    }
}

pub struct BoundedConnect<C>(C);

impl<S, C> TlsConnect<S> for BoundedConnect<C>
where
    C: TlsConnect<S>,
    C::Future: Send + 'static,
{
    type Stream = Bounded<C::Stream>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connecting = self.0.connect(stream);
        Box::pin(async move { connecting.await.map(Bounded) })
    }
}

/// A stream whose reads are offered at most [`READ_WINDOW`] bytes of the caller's buffer.
pub struct Bounded<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Bounded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let window = buf.remaining().min(READ_WINDOW);
        let mut inner = ReadBuf::new(buf.initialize_unfilled_to(window));
        match Pin::new(&mut self.0).poll_read(cx, &mut inner) {
            Poll::Ready(Ok(())) => {
                let read = inner.filled().len();
                buf.advance(read);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Bounded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: TlsStream + Unpin> TlsStream for Bounded<T> {
    fn channel_binding(&self) -> ChannelBinding {
        self.0.channel_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out TLS-record-sized reads and notes how much room it was offered.
    struct Probe {
        offered: Vec<usize>,
        left: usize,
    }

    impl AsyncRead for Probe {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            self.offered.push(buf.remaining());
            let n = buf.remaining().min(16 * 1024).min(self.left);
            buf.put_slice(&vec![7u8; n]);
            self.left -= n;
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn reads_into_a_large_buffer_are_offered_a_bounded_window() {
        let mut stream = Bounded(Probe { offered: Vec::new(), left: 100 * 1024 });
        let mut storage = vec![0u8; 8 << 20];
        let mut buf = ReadBuf::new(&mut storage);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while buf.filled().len() < 100 * 1024 {
            assert!(Pin::new(&mut stream).poll_read(&mut cx, &mut buf).is_ready());
        }
        assert_eq!(buf.filled().len(), 100 * 1024);
        assert!(buf.filled().iter().all(|&b| b == 7));
        assert!(stream.0.offered.iter().all(|&n| n <= READ_WINDOW), "{:?}", stream.0.offered);
    }
}
